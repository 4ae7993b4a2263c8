from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.main import create_app
from service.settings import Settings

AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def executor(request: pytest.FixtureRequest) -> str:
    """The backend under test: `local`, or `ray` on the session's local Ray cluster."""
    name: str = request.config.getoption("executor")
    if name == "ray":
        request.getfixturevalue("ray_cluster")
    return name


@pytest.fixture(scope="session")
def make_client(tmp_path_factory: pytest.TempPathFactory, executor: str) -> AppFactory:
    """Build an app with overridden settings and talk to it over ASGI inside its lifespan."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        data_dir = Path(tmp_path_factory.mktemp("data"))
        settings = Settings(
            **{"data_dir": data_dir, "image_workers": 2, "executor": executor, **overrides}
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tensorlens") as c:
                c.app = app  # type: ignore[attr-defined]
                yield c

    return factory


@pytest.fixture(scope="session")
async def client(make_client: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """One app with default limits for the whole session (starting worker processes costs)."""
    async with make_client() as c:
        yield c
