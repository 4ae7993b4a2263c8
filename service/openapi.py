"""The OpenAPI document generated from the app: `tensorlens openapi` (`make openapi`) prints
it; `python -m service.openapi` does the same."""

from __future__ import annotations

import json

from service.main import create_app


def openapi_json() -> str:
    return json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(openapi_json(), end="")
