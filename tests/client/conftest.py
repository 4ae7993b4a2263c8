"""Fixtures of the client's tests: the real app in process, and a live server.

The in-process recipe is the one the README documents: ``Client.from_app(app)``
(``AsyncClient.from_app`` in async tests) enters the app's lifespan, so its worker
pool and training lanes run for as long as the client is open.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.main import create_app
from service.settings import Settings
from tensorlens import AsyncClient, Client
from tensorlens._asgi import IN_PROCESS_BASE_URL, ThreadedASGITransport
from tests._support import live_service

REPO_ROOT = Path(__file__).resolve().parents[2]
AppFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def make_app(tmp_path_factory: pytest.TempPathFactory) -> AppFactory:
    """An app with its own data directory and two image workers, settings overridable."""

    def factory(**overrides: Any) -> Any:
        data_dir = tmp_path_factory.mktemp("client-data")
        return create_app(Settings(**{"data_dir": data_dir, "image_workers": 2, **overrides}))

    return factory


@pytest.fixture(scope="session")
def transport(make_app: AppFactory) -> Iterator[ThreadedASGITransport]:
    """One started app for the session, behind the transport ``Client.from_app`` uses
    (here by hand, so that a test can put a faulty network in front of it)."""
    transport = ThreadedASGITransport(make_app())
    transport.start()
    yield transport
    transport.close()


@pytest.fixture(scope="session")
def client(transport: ThreadedASGITransport) -> Iterator[Client]:
    with Client(IN_PROCESS_BASE_URL, transport=transport) as c:
        yield c


@pytest.fixture(scope="module")
async def aclient(make_app: AppFactory) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_app(make_app()) as c:
        yield c


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service` under uvicorn on a free loopback port."""
    work_dir = tmp_path_factory.mktemp("client-live")
    with live_service(work_dir, {"TENSORLENS_IMAGE_WORKERS": "2"}) as live:
        yield live.base_url
    assert "Traceback" not in live.log_text()
