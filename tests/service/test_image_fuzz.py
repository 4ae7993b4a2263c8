"""The decoder under fuzzing: damaged files of every supported format get a 4xx problem
(or decode, when the damage left a valid image), never a 5xx, and the service stays ready.

Kept short for CI; `TENSORLENS_FUZZ_CASES=500` (cases per format) and
`TENSORLENS_FUZZ_SEED` run a longer or different campaign.
"""

import os
from collections import Counter

import httpx
import pytest

from bench._hostile import FORMATS, mutants, valid_files
from tests.service._api import assert_problem
from workers.errors import InvalidImage, UnsupportedMediaType
from workers.images.codec import decode_image

pytestmark = pytest.mark.anyio

CASES_PER_FORMAT = int(os.environ.get("TENSORLENS_FUZZ_CASES", "15"))
SEED = int(os.environ.get("TENSORLENS_FUZZ_SEED", "12"))
#: Ops that apply to any decoded image, so a mutant that decodes is carried further.
OPS = ("histogram", "equalize_hist", "img_as_ubyte", "rescale_intensity")


def upload(content: bytes) -> dict:
    return {"image": ("upload", content, "application/octet-stream")}


@pytest.mark.parametrize("fmt", FORMATS)
async def test_valid_files_decode(client: httpx.AsyncClient, fmt: str) -> None:
    for content in valid_files()[fmt]:
        response = await client.post(
            "/v1/images/histogram?include_image=false", files=upload(content)
        )
        assert response.status_code == 200, response.text


async def test_damaged_files_get_4xx_problems_and_the_service_stays_ready(
    client: httpx.AsyncClient,
) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    for i, (fmt, content) in enumerate(mutants(SEED, CASES_PER_FORMAT)):
        op = OPS[i % len(OPS)]
        accept = "image/png" if i % 2 else "application/json"
        response = await client.post(
            f"/v1/images/{op}?include_image=false",
            files=upload(content),
            headers={"Accept": accept},
        )
        where = f"{fmt} mutant #{i} ({len(content)} bytes: {content[:24]!r}...) on {op}"
        assert response.status_code < 500, f"{where}: {response.text}"
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
        statuses[fmt, response.status_code] += 1
    assert (await client.get("/readyz")).status_code == 200
    # Most mutants are refused: the campaign is not testing valid files by accident.
    refused = sum(n for (_, status), n in statuses.items() if status >= 400)
    assert refused > len(FORMATS) * CASES_PER_FORMAT // 3, statuses


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_short_prefix_is_refused_as_a_domain_error(fmt: str) -> None:
    # A few bytes of a file are where header parsers fail in ways of their own (a 2-byte
    # file once made a plugin's magic-bytes test raise struct.error, a 500).
    for content in valid_files()[fmt]:
        for length in range(1, 48):
            with pytest.raises((InvalidImage, UnsupportedMediaType)):
                decode_image(content[:length], max_pixels=10**6)
