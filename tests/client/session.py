"""The README's first session, through the client (sync and async twins).

Each step is the curl line of the README beside it; the checks compare the answers
with what scikit-image computes for the same input.
"""

import io
from pathlib import Path

import numpy as np
from numpy.testing import assert_array_equal
from PIL import Image
from skimage import data, feature

from tensorlens import Adam, AsyncClient, Client, ModelSpec, SpiralConfig, SpiralData

#: A spiral that trains in seconds: five reports (epochs 0, 5, 10, 15, 19).
TINY = SpiralConfig(
    data=SpiralData(points_per_class=50, seed=3),
    model=ModelSpec(hidden=[8]),
    optimizer=Adam(lr=0.01),
    epochs=20,
    report_every=5,
    device="cpu",
)

STEPS = [{"op": "canny", "sigma": 2}, {"op": "fill_holes"}]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def photo(tmp_path: Path) -> Path:
    """A JPEG on disk, as a user's photo.jpg."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(data.chelsea()).save(path, format="JPEG")
    return path


def check_samples(samples: list) -> None:
    names = {sample.name for sample in samples}
    assert {"camera", "coins", "chelsea"} <= names


def check_edges(png: bytes) -> None:
    expected = feature.canny(data.camera(), sigma=2)
    assert_array_equal(decode(png), expected.astype(np.uint8) * 255)


def check_clahe(png: bytes, jpeg: Path) -> None:
    assert decode(png).shape == decode(jpeg.read_bytes()).shape


def check_report(png: bytes) -> None:
    assert png.startswith(b"\x89PNG") and decode(png).ndim == 3


def first_session(client: Client, tmp_path: Path) -> None:
    # curl -s 'http://127.0.0.1:8000/v1/samples'
    check_samples(client.list_samples())
    # curl -X POST '/v1/images/canny?sample=camera&sigma=2' -H 'Accept: image/png'
    check_edges(client.canny(sample="camera", sigma=2, accept="png"))
    # curl -X POST '/v1/images/equalize_adapthist?clip_limit=0.03' -F image=@photo.jpg
    jpeg = photo(tmp_path)
    check_clahe(client.equalize_adapthist(jpeg, clip_limit=0.03, accept="png"), jpeg)
    # curl -X POST '/v1/images/pipeline?sample=coins' -F 'steps=[...]' | jq '.steps'
    result = client.pipeline(STEPS, sample="coins")
    assert [step.op for step in result.steps] == ["canny", "fill_holes"]
    assert result.dtype == "bool" and result.shape == list(data.coins().shape)
    # curl -X POST '/v1/images/contrast-report?sample=camera' -o report.png
    check_report(client.contrast_report(sample="camera"))


async def afirst_session(client: AsyncClient, tmp_path: Path) -> None:
    check_samples(await client.list_samples())
    check_edges(await client.canny(sample="camera", sigma=2, accept="png"))
    jpeg = photo(tmp_path)
    with jpeg.open("rb") as file:  # a binary file works as well as a path
        check_clahe(await client.equalize_adapthist(file, clip_limit=0.03, accept="png"), jpeg)
    result = await client.pipeline(STEPS, sample="coins")
    assert [step.op for step in result.steps] == ["canny", "fill_holes"]
    check_report(await client.contrast_report(sample="camera"))
