"""`python -m service`: run the API with uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from service.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # The service writes its own structured line per request (service/observability.py).
        access_log=False,
        # Open streams (Server-Sent Events) must not hold a shutdown forever.
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
