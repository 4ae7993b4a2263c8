"""Training jobs over HTTP: the notes' runs reproduced, live progress, cancel, restart."""

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.service._api import LONG, SMALL, submit, wait_finished, wait_status

pytestmark = pytest.mark.anyio

NOTES_LINEAR = {
    "task": "spiral",
    "data": {"points_per_class": 1000, "classes": 3, "seed": 12345},
    "model": {"hidden": [100], "activation": "identity"},
    "optimizer": {"name": "sgd", "lr": 1e-3, "weight_decay": 1e-5},
    "epochs": 1000,
    "report_every": 100,
    "device": "cpu",
}
NOTES_RELU = {
    **NOTES_LINEAR,
    "model": {"hidden": [100], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
}


async def test_the_notes_linear_run_is_reproduced_to_the_printed_digit(
    client: httpx.AsyncClient,
) -> None:
    job = await submit(client, NOTES_LINEAR)
    assert job["status"] == "queued" and job["links"]["self"] == f"/v1/trainings/{job['id']}"
    done = await wait_finished(client, job["id"])
    assert done["status"] == "succeeded", done["reason"]
    last = done["progress"]
    assert last["epoch"] == 999
    # Formatted exactly as the notes print it.
    line = "[EPOCH]: %i, [LOSS]: %.6f, [ACCURACY]: %.3f" % (  # noqa: UP031
        last["epoch"],
        last["loss"],
        last["accuracy"],
    )
    assert line == "[EPOCH]: 999, [LOSS]: 0.861541, [ACCURACY]: 0.504"
    model = (await client.get(done["links"]["model"])).json()
    assert model["architecture"] == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=100, bias=True)\n"
        "  (1): Linear(in_features=100, out_features=3, bias=True)\n"
        ")"
    )
    assert model["parameter_count"] == 2 * 100 + 100 + 100 * 3 + 3
    meta = model["metadata"]
    assert meta["torch_version"].startswith("2.") and len(meta["weights_sha256"]) == 64
    assert [h["epoch"] for h in meta["history"]] == [*range(0, 1000, 100), 999]


async def test_the_relu_network_beats_the_linear_model_and_is_deterministic(
    client: httpx.AsyncClient,
) -> None:
    first, second = [await submit(client, NOTES_RELU) for _ in range(2)]
    a = await wait_finished(client, first["id"])
    b = await wait_finished(client, second["id"])
    assert a["metrics"]["accuracy"] >= 0.93
    models = [(await client.get(f"/v1/models/{j['id']}")).json() for j in (a, b)]
    assert models[0]["metadata"]["weights_sha256"] == models[1]["metadata"]["weights_sha256"]


async def test_progress_streams_as_server_sent_events(client: httpx.AsyncClient) -> None:
    job = await submit(client, {**SMALL, "epochs": 200, "report_every": 20})
    events: list[tuple[str | None, str, dict]] = []
    async with client.stream("GET", f"/v1/trainings/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event_id = kind = None
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((event_id, kind, json.loads(line[6:])))
                event_id = None
    kinds = [kind for _, kind, _ in events]
    assert kinds == ["progress"] * 11 + ["end"]
    epochs = [data["epoch"] for _, kind, data in events if kind == "progress"]
    assert epochs == [*range(0, 200, 20), 199]
    assert [int(i) for i, kind, _ in events if kind == "progress"] == list(range(1, 12))
    assert events[-1][2]["status"] == "succeeded"

    resumed = await client.get(f"/v1/trainings/{job['id']}/events", headers={"Last-Event-ID": "9"})
    replayed = [json.loads(x[6:]) for x in resumed.text.splitlines() if x.startswith("data: ")]
    assert [e.get("seq") for e in replayed] == [10, 11, None]


async def test_a_running_job_is_cancelled_within_a_report_interval(
    client: httpx.AsyncClient,
) -> None:
    job = await submit(client, LONG)
    await wait_status(client, job["id"], "running")
    response = await client.delete(f"/v1/trainings/{job['id']}")
    assert response.status_code == 202 and response.json()["cancel_requested"]
    started = time.monotonic()
    done = await wait_finished(client, job["id"], timeout_s=20)
    assert done["status"] == "cancelled"
    assert time.monotonic() - started < 10
    assert done["model_id"] is None
    again = await client.delete(f"/v1/trainings/{job['id']}")
    assert again.status_code == 409


async def test_a_diverging_loss_fails_the_job_with_the_reason(client: httpx.AsyncClient) -> None:
    job = await submit(
        client, {"task": "regression", "optimizer": {"name": "sgd", "lr": 10}, "epochs": 200}
    )
    done = await wait_finished(client, job["id"])
    assert done["status"] == "failed"
    assert "loss became" in done["reason"] and ("nan" in done["reason"] or "inf" in done["reason"])


async def test_listing_is_paged_newest_first(client: httpx.AsyncClient) -> None:
    ids = [(await submit(client, SMALL))["id"] for _ in range(3)]
    page = (await client.get("/v1/trainings", params={"limit": 2})).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    assert page["total"] >= 3 and page["limit"] == 2
    second = (await client.get("/v1/trainings", params={"limit": 2, "offset": 1})).json()
    assert second["items"][0]["id"] == ids[1]
    for job_id in ids:
        await wait_finished(client, job_id)


@pytest.mark.parametrize(
    ("patch", "parameter"),
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 10**9}, "epochs"),
        ({"epochs": 20_000}, "epochs"),  # over the service's max_epochs setting (10 000)
        ({"model": {"hidden": [100], "activation": "swish"}}, "model.activation"),
        ({"model": {"hidden": [5000]}}, "model.hidden[0]"),
        ({"model": {"hidden": [64] * 9}}, "model.hidden"),
        ({"data": {"points_per_class": 10**7}}, "data.points_per_class"),
        ({"optimizer": {"name": "rmsprop"}}, "optimizer.name"),
        ({"optimizer": {"name": "sgd", "lr": -1}}, "optimizer.lr"),
        ({"task": "segmentation"}, "task"),
        ({"report_every": 0}, "report_every"),
        ({"learning_rate": 1}, "learning_rate"),
    ],
)
async def test_invalid_configs_are_422_naming_the_field(
    client: httpx.AsyncClient, patch: dict, parameter: str
) -> None:
    before = (await client.get("/v1/trainings")).json()["total"]
    response = await client.post("/v1/trainings", json={**SMALL, **patch})
    assert response.status_code == 422, response.text
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert body["parameter"] == parameter
    assert (await client.get("/v1/trainings")).json()["total"] == before  # nothing stored


async def test_huge_paging_values_are_422_not_500(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/trainings", params={"offset": 10**30})).status_code == 422
    events = await client.get(f"/v1/trainings/{'0' * 32}/events", params={"after": 10**30})
    assert events.status_code == 422
    assert (await client.get("/v1/models", params={"offset": 10**30})).status_code == 422


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/trainings/{'0' * 32}")).status_code == 404
    assert (await client.get(f"/v1/trainings/{'0' * 32}/events")).status_code == 404
    assert (await client.delete(f"/v1/trainings/{'0' * 32}")).status_code == 404
    assert (await client.get("/v1/trainings/not-an-id")).status_code == 422


@pytest.fixture
async def one_lane(make_client) -> AsyncIterator[httpx.AsyncClient]:
    # One training at a time on either backend; on the 2-CPU Ray test cluster a training
    # leaves room for one image task.
    async with make_client(
        image_workers=1,
        lanes_per_device=1,
        max_queued_trainings=1,
        ray_training_cpus=1.5,
        ray_image_cpus=0.5,
    ) as c:
        yield c


async def test_a_queued_job_is_cancelled_at_once_and_a_full_queue_is_429(
    one_lane: httpx.AsyncClient,
) -> None:
    running = await submit(one_lane, LONG)
    await wait_status(one_lane, running["id"], "running")
    queued = await submit(one_lane, SMALL)
    full = await one_lane.post("/v1/trainings", json=SMALL)
    assert full.status_code == 429 and full.headers["retry-after"] == "10"
    assert full.json()["type"] == "/problems/queue-full"
    cancelled = await one_lane.delete(f"/v1/trainings/{queued['id']}")
    assert cancelled.json()["status"] == "cancelled"
    # The cancelled job no longer holds the queue's one place.
    replacement = await submit(one_lane, SMALL)
    await one_lane.delete(f"/v1/trainings/{replacement['id']}")
    await one_lane.delete(f"/v1/trainings/{running['id']}")
    assert (await wait_finished(one_lane, running["id"]))["status"] == "cancelled"
    after = await submit(one_lane, SMALL)
    assert (await wait_finished(one_lane, after["id"]))["status"] == "succeeded"
    assert (await one_lane.get(f"/v1/trainings/{queued['id']}")).json()["started_at"] is None


async def test_image_ops_keep_answering_while_a_model_trains(
    one_lane: httpx.AsyncClient,
) -> None:
    job = await submit(one_lane, LONG)
    await wait_status(one_lane, job["id"], "running")
    for _ in range(5):
        response = await one_lane.post("/v1/images/equalize_hist?sample=camera")
        assert response.status_code == 200
    # Answered while the training (minutes of work) still runs: they did not wait for it.
    assert (await one_lane.get(f"/v1/trainings/{job['id']}")).json()["status"] == "running"
    await one_lane.delete(f"/v1/trainings/{job['id']}")
    await wait_finished(one_lane, job["id"])


async def test_a_restart_keeps_models_and_fails_interrupted_jobs(make_client, tmp_path) -> None:
    async with make_client(image_workers=1, data_dir=tmp_path) as first:
        done = await submit(first, SMALL)
        await wait_finished(first, done["id"])
        cut = await submit(first, LONG)
        await wait_status(first, cut["id"], "running")
    async with make_client(image_workers=1, data_dir=tmp_path) as second:
        job = (await second.get(f"/v1/trainings/{cut['id']}")).json()
        assert job["status"] == "failed" and job["reason"] == "interrupted"
        kept = (await second.get(f"/v1/trainings/{done['id']}")).json()
        assert kept["status"] == "succeeded"
        predicted = await second.post(
            f"/v1/models/{done['id']}/predict", json={"inputs": [[0.0, 0.5]]}
        )
        assert predicted.status_code == 200 and len(predicted.json()["classes"]) == 1


async def test_cuda_is_refused_where_there_is_none_and_auto_falls_back(
    client: httpx.AsyncClient,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for CPU-only machines; the GPU script covers CUDA")
    refused = await client.post("/v1/trainings", json={**SMALL, "device": "cuda"})
    assert refused.status_code == 422 and refused.json()["parameter"] == "device"
    job = await submit(client, {**SMALL, "device": "auto"})
    done = await wait_finished(client, job["id"])
    model = (await client.get(f"/v1/models/{done['id']}")).json()
    assert model["metadata"]["device"] == "cpu"
