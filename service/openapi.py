"""`python -m service.openapi`: print the OpenAPI document generated from the app."""

from __future__ import annotations

import json

from service.main import create_app


def openapi_json() -> str:
    return json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(openapi_json(), end="")
