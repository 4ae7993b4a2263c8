"""Write ``_sync.py`` from ``_async.py`` (as httpcore does with its unasync script).

``python -m tensorlens._unasync`` rewrites the file; ``--check`` exits 1 when it is
out of date. Not imported by the client.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "_async.py"
TARGET = HERE / "_sync.py"

DOCSTRING = '''"""The sync client: one method per route of the tensorlens API.

Generated from ``_async.py`` by ``python -m tensorlens._unasync``: edit that file.
"""

# ruff: noqa: UP028  (the async source cannot `yield from`; its twin keeps its loops)
'''

#: Whole words (or phrases) of the async client and their sync counterparts.
SUBSTITUTIONS = [
    ("AsyncIterator", "Iterator"),
    ("AsyncBaseTransport", "BaseTransport"),
    ("AsyncClient", "Client"),
    ("asynccontextmanager", "contextmanager"),
    ("async def", "def"),
    ("async with", "with"),
    ("async for", "for"),
    ("await ", ""),
    ("aconnect_sse", "connect_sse"),
    ("aiter_sse", "iter_sse"),
    ("aread", "read"),
    ("aclose", "close"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("asyncio.sleep", "time.sleep"),
    ("import asyncio", "import time"),
]

#: The sync client has no event loop of its own: its app runs on a loop in a thread.
FROM_APP = '''    # region from_app
    @classmethod
    @contextmanager
    def from_app(
        cls,
        app: _asgi.ASGIApp,
        *,
        timeout: float | httpx.Timeout = _core.DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        retries: int = 0,
        max_retry_wait_s: float = 60.0,
        max_reconnects: int = 5,
    ) -> Iterator[Self]:
        """A client of ``app`` (e.g. ``create_app(settings)``) in this process: the app's
        lifespan and requests run on an event loop in a thread for as long as the
        ``with`` block."""
        transport = _asgi.ThreadedASGITransport(app)
        transport.start()
        with cls(
            _asgi.IN_PROCESS_BASE_URL,
            transport=transport,
            timeout=timeout,
            headers=headers,
            api_key=api_key,
            retries=retries,
            max_retry_wait_s=max_retry_wait_s,
            max_reconnects=max_reconnects,
        ) as client:
            yield client

    # endregion
'''


def generate() -> str:
    source = SOURCE.read_text()
    body = source.partition('"""\n')[2]  # all but the module docstring
    body = re.sub(
        r"    # region from_app\n.*?    # endregion\n", lambda _: FROM_APP, body, flags=re.S
    )
    for old, new in SUBSTITUTIONS:
        end = r"(?!\w)" if old[-1].isalnum() or old[-1] == "_" else ""
        body = re.sub(rf"(?<!\w){re.escape(old)}{end}", new, body)
    return _format(DOCSTRING + body)


def _format(code: str) -> str:
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.exists() else [sys.executable, "-m", "ruff"]
    result = subprocess.run(
        [*command, "format", "--stdin-filename", str(TARGET), "-"],
        input=code,
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return result.stdout


def main(argv: list[str]) -> int:
    code = generate()
    if "--check" in argv:
        if TARGET.read_text() != code:
            print(f"{TARGET} is out of date: run python -m tensorlens._unasync", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
