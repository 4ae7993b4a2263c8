"""Training speed: the notes' plain loop against the service's trainer, in one process.

1. The notes' spiral MLP (two-layer ReLU network, Adam, 1000 epochs, full batch):
   the loop exactly as the notes write it (per-epoch ``.item()``, accuracy and print;
   the print goes to a string buffer, ``display.clear_output`` has no IPython here)
   against :func:`workers.training.train` with its default reporting. The plain loop
   is timed from building the model, on data made beforehand; the trainer is timed
   whole (data, model, loop, state dict), so the ratio is conservative. Target: the
   trainer costs at most 1.05x the plain loop.
2. The notes' regression ensemble (5 two-layer ReLU networks, Adam, 1000 epochs):
   trained one after another as the notes do, against the trainer's vectorised
   (torch.func) ensemble.

Runs alternate between the contenders so that a machine getting busier or quieter
affects both; the table shows the median and the fastest of ``--repeats`` runs.

    .venv/bin/python bench/training.py [--repeats 5] [--epochs 1000] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from workers.training import make_cubic, make_spiral, train, validate_training
from workers.training.datasets import seeded_generator
from workers.training.models import build_model

SPIRAL = {
    "task": "spiral",
    "model": {"hidden": [100], "activation": "relu"},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
    "device": "cpu",
}
ENSEMBLE = {
    "task": "regression",
    "model": {"hidden": [100], "activation": "relu", "ensemble_size": 5},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
    "device": "cpu",
}


def notes_spiral_loop(epochs: int) -> tuple[float, float]:
    """The notes' two-layer network and loop; returns (seconds, last loss)."""
    config = validate_training(SPIRAL)
    generator = seeded_generator(config.data.seed)
    X, Y = make_spiral(config.data, generator)
    torch.default_generator.set_state(generator.get_state())  # where the notes' seed has got to
    D, C, H = 2, 3, 100
    sink = io.StringIO()
    started = time.perf_counter()
    model = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    with contextlib.redirect_stdout(sink):
        for t in range(epochs):
            y_pred = model(X)
            loss = criterion(y_pred, Y)
            score, predicted = torch.max(y_pred, 1)  # noqa: RUF059
            acc = (Y == predicted).sum().float() / len(Y)  # noqa: SIM300
            print("[EPOCH]: %i, [LOSS]: %.6f, [ACCURACY]: %.3f" % (t, loss.item(), acc))  # noqa: UP031
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started, loss.item()


def trainer_spiral(epochs: int) -> tuple[float, float]:
    config = validate_training({**SPIRAL, "epochs": epochs})
    reports = []
    started = time.perf_counter()
    result = train(config, report=reports.append, should_stop=lambda: False)
    return time.perf_counter() - started, result.final.loss


def sequential_ensemble(epochs: int) -> tuple[float, float]:
    """The notes' way: build each network in turn and train it for all epochs."""
    config = validate_training(ENSEMBLE)
    generator = seeded_generator(config.data.seed)
    X, y = make_cubic(config.data, generator)
    started = time.perf_counter()
    members = build_model(config.model, 1, 1, generator=generator).members
    losses = []
    for model in members:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        for _ in range(epochs):
            loss = F.mse_loss(model(X), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
    return time.perf_counter() - started, statistics.fmean(losses)


def vectorised_ensemble(epochs: int) -> tuple[float, float]:
    config = validate_training({**ENSEMBLE, "epochs": epochs, "report_every": epochs})
    started = time.perf_counter()
    result = train(config)
    return time.perf_counter() - started, result.final.loss


def compare(name: str, baseline, contender, epochs: int, repeats: int) -> dict[str, object]:
    baseline(min(epochs, 20))  # warm up allocators and kernels
    contender(min(epochs, 20))
    times: dict[str, list[float]] = {"baseline": [], "contender": []}
    losses = {}
    for _ in range(repeats):
        for key, run in (("baseline", baseline), ("contender", contender)):
            seconds, losses[key] = run(epochs)
            times[key].append(seconds)
    return {"name": name, "times": times, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {args.epochs} epochs, "
        f"{args.repeats} alternating runs each"
    )
    rows = [
        (
            "spiral MLP",
            "notes' plain loop",
            "trainer",
            compare("spiral", notes_spiral_loop, trainer_spiral, args.epochs, args.repeats),
        ),
        (
            "5-net ensemble",
            "sequential",
            "vectorised",
            compare(
                "ensemble", sequential_ensemble, vectorised_ensemble, args.epochs, args.repeats
            ),
        ),
    ]
    print()
    print(f"{'benchmark':<16}{'variant':<20}{'median s':>10}{'min s':>10}{'last loss':>12}")
    for title, base_name, contender_name, outcome in rows:
        for key, label in (("baseline", base_name), ("contender", contender_name)):
            times = outcome["times"][key]
            print(
                f"{title:<16}{label:<20}{statistics.median(times):>10.3f}{min(times):>10.3f}"
                f"{outcome['losses'][key]:>12.6f}"
            )
    print()
    spiral, ensemble = rows[0][3], rows[1][3]
    ratio = statistics.median(spiral["times"]["contender"]) / statistics.median(
        spiral["times"]["baseline"]
    )
    best = min(spiral["times"]["contender"]) / min(spiral["times"]["baseline"])
    verdict = "ok" if ratio <= 1.05 else "OVER the 1.05x budget"
    print(f"trainer / plain loop: {ratio:.3f}x median, {best:.3f}x best  ({verdict})")
    speedup = statistics.median(ensemble["times"]["baseline"]) / statistics.median(
        ensemble["times"]["contender"]
    )
    print(f"ensemble vectorised speed-up: {speedup:.2f}x median")


if __name__ == "__main__":
    main()
