"""The API's routers, one module per endpoint group."""

from __future__ import annotations

from fastapi.routing import APIRoute


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operation id, ``<tag>-<route name>`` (stable across releases)."""
    return f"{route.tags[0]}-{route.name}"
