"""No Docker engine runs in CI, so the deployment files are checked by parsing them."""

import re
import shlex
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_from_a_base_image_argument() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    assert ("FROM", "${BASE_IMAGE}") in instructions
    args = [value for kind, value in instructions if kind == "ARG"]
    assert any(a.startswith("TORCH_INDEX_URL=") for a in args)


def test_dockerfile_copies_only_what_exists_and_runs_the_service_unprivileged() -> None:
    instructions = dockerfile_instructions()
    for kind, value in instructions:
        if kind == "COPY":
            *sources, _dest = shlex.split(value)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    kinds = dict(instructions)
    assert kinds["USER"] not in ("root", "0")
    assert kinds["EXPOSE"] == "8000"
    assert kinds["CMD"] == '["python", "-m", "service"]'
    assert "/readyz" in kinds["HEALTHCHECK"]
    install = " ".join(v for k, v in instructions if k == "RUN")
    assert "torch==2.13.0" in install and "-c constraints.txt '.[ray]'" in install
    env = " ".join(v for k, v in instructions if k == "ENV")
    assert "TENSORLENS_DATA_DIR=/data" in env and "TENSORLENS_HOST=0.0.0.0" in env


def test_dockerfile_copies_every_package_the_project_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = {
        shlex.split(value)[0]
        for kind, value in dockerfile_instructions()
        if kind == "COPY" and not value.startswith("--")
    }
    assert packages <= copied, f"packages the image would miss: {packages - copied}"


def load_compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def merged(base: dict, override: dict) -> dict:
    """``docker compose -f base -f override``'s merge for mappings: override wins per key."""
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both else value
    return out


def assert_gpu_reservation(service: dict) -> None:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_api_service() -> None:
    compose = load_compose()
    api = compose["services"]["api"]
    assert "profiles" not in api  # the default: `docker compose up`
    assert api["build"]["context"] == "."
    assert set(api["build"]["args"]) == {"BASE_IMAGE", "TORCH_INDEX_URL"}
    assert api["ports"] == ["8000:8000"]
    assert api["environment"]["TENSORLENS_DATA_DIR"] == "/data"
    volume, mount = api["volumes"][0].split(":")
    assert mount == "/data" and volume in compose["volumes"]
    check = api["healthcheck"]
    assert check["test"][0] == "CMD" and "/readyz" in check["test"][-1]
    assert re.fullmatch(r"\d+s", check["interval"]) and check["retries"] >= 1
    # The default stack runs on a host without GPUs: no reservation, the CPU build.
    assert "deploy" not in api
    assert api["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu}")
    assert api["environment"]["TENSORLENS_EXECUTOR"] == "${TENSORLENS_EXECUTOR:-local}"


def test_compose_cluster_profile() -> None:
    compose = load_compose()
    services = compose["services"]
    api, head, worker = services["api"], services["ray-head"], services["ray-worker"]
    for node in (head, worker):
        assert node["profiles"] == ["cluster"]
        # One image everywhere: Python, Ray and torch versions match across nodes.
        assert node["image"] == api["image"] and node["build"] == api["build"]
        assert "deploy" not in node
        assert re.fullmatch(r"\d+(gb|mb)", node["shm_size"])
        assert node["command"][:2] == ["ray", "start"] and "--block" in node["command"]
    for service in (api, head, worker):
        env = service["environment"]
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "${RAY_AUTH_TOKEN:-}"
    # Nodes override the image's API healthcheck with Ray's own.
    assert head["healthcheck"]["test"][:3] == worker["healthcheck"]["test"][:3]
    assert "--head" in head["command"] and "--port=6379" in head["command"]
    assert "8265:8265" in head["ports"]  # the dashboard
    assert head["healthcheck"]["test"][:3] == ["CMD", "ray", "health-check"]
    assert "--address=ray-head:6379" in worker["command"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    # The API joins as a node that runs no work, then serves with the Ray executor.
    script = api["command"][-1]
    assert "ray start --address=ray-head:6379 --num-cpus=0 --num-gpus=0" in script
    assert '[ -n "$$RAY_AUTH_TOKEN" ] || {' in script  # no token: fail, not a lone head
    assert script.rstrip().endswith("exec python -m service")
    assert api["environment"]["TENSORLENS_RAY_ADDRESS"] == "auto"
    assert api["depends_on"]["ray-head"] == {"condition": "service_healthy", "required": False}
    cluster_env = dict(
        line.split("=", 1)
        for line in (ROOT / "cluster.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert cluster_env == {"COMPOSE_PROFILES": "cluster", "TENSORLENS_EXECUTOR": "ray"}


def test_compose_gpu_override() -> None:
    base, gpu = load_compose(), load_compose("compose.gpu.yaml")
    # It only adds to services the base defines, and to all of them.
    assert set(gpu) == {"services"} | {key for key in gpu if key.startswith("x-")}
    assert set(gpu["services"]) == set(base["services"])
    stack = merged(base, gpu)
    images = set()
    for name, service in stack["services"].items():
        assert_gpu_reservation(service)
        args = service["build"]["args"]
        assert service["build"]["context"] == "."
        assert re.search(r"/whl/cu\d+}$", args["TORCH_INDEX_URL"]), name
        assert args["BASE_IMAGE"].startswith("${TENSORLENS_CUDA_BASE_IMAGE:-nvidia/cuda:")
        images.add(service["image"])
        # Everything else (ports, volumes, healthchecks, the cluster profile) is the base's.
        for key in set(base["services"][name]) - {"build", "image"}:
            assert service[key] == base["services"][name][key]
    # One CUDA image for every node, beside the CPU one.
    assert images == {"tensorlens:cuda"} != {base["services"]["api"]["image"]}
