"""The README documents every setting and every endpoint."""

import re
from pathlib import Path

from service.main import create_app
from service.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`TENSORLENS_{name.upper()}`" in README, name


def test_every_route_is_documented() -> None:
    documented = README.replace("{op}", "{name}")
    ops_routes = re.compile(r"^/v1/images/[a-z_0-9]+$")
    for path in create_app().openapi()["paths"]:
        if ops_routes.match(path) and path.split("/")[-1] in README:
            continue  # one row per op in the ops table
        generic = re.sub(r"\{[a-z_]*id\}", "{id}", path)
        assert path in documented or generic in README or path in README, path
