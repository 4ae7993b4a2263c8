import os
from collections.abc import Iterator

import pytest

#: The local Ray instance the tests start: what CI's 2-core machine can give it.
RAY_TEST_CPUS = 2
RAY_TEST_OBJECT_STORE_BYTES = 128 * 1024**2


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="the backend the service tests run against (TENSORLENS_EXECUTOR)",
    )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """A real local Ray cluster for the whole session: 2 CPUs, no dashboard, a small
    object store, no usage reporting. Yields its resources."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(
        num_cpus=RAY_TEST_CPUS,
        include_dashboard=False,
        object_store_memory=RAY_TEST_OBJECT_STORE_BYTES,
        log_to_driver=False,
    )
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()
