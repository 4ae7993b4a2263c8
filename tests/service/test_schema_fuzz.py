"""Schemathesis against the app in process: every response must be documented.

Every operation of the served document gets generated requests, valid and not (its
examples, the coverage phase's edge cases, then random data), and every response goes
through all of schemathesis's checks: no 5xx, a documented status, content type and
headers, a body matching its schema, bad data refused, good data accepted. A fixed seed
and a bounded number of examples keep it to a minute or two on two cores; `make fuzz`
runs the same test with ``TENSORLENS_FUZZ_EXAMPLES`` (and more time).
"""

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans

from service.main import create_app
from service.settings import Settings

#: Random cases per operation after the examples and the coverage phase.
EXAMPLES = int(os.environ.get("TENSORLENS_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("TENSORLENS_FUZZ_SEED", "20261203"))

#: Statuses that answer a request the document allows but the server may still refuse:
#: what no schema can say (an image route given neither `image` nor `sample`, `low`
#: above `high`, a training over the service's limits, a model that does not exist).
ACCEPTED_AS_VALID = ["2xx", "3xx", "404", "409", "413", "415", "422", "429"]

#: Conforming responses by status, for the line the module prints at its end.
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[object]:
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("fuzz")),
        image_workers=2,
        # Trainings the fuzzer gets accepted stay small, so the lanes keep up.
        max_epochs=3,
        max_points=64,
        max_hidden_units=8,
        max_ensemble=2,
    )
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES},
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_AS_VALID}},
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    )
    # Schemathesis runs the app's lifespan (worker pool, training lanes) for its requests.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings), config=config)
    yield schema
    shutdown_lifespans()
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(STATUSES.items()))
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # else a passing run hides the line
            reporter.write_line(
                f"\nschemathesis (seed {SEED}, {EXAMPLES} random examples an operation): "
                f"{STATUSES.total()} conforming responses; by status {statuses}"
            )


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # Schemathesis 4.32 renames the test item per operation through `_nodeid`, an
    # attribute pytest 9.2 no longer has; give it one (the summary keeps pytest's id).
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_response_is_documented(case: schemathesis.Case) -> None:
    STATUSES[case.call_and_validate().status_code] += 1
