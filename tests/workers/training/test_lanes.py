import pytest

from workers.errors import InvalidParameter
from workers.training.lanes import plan_lanes


@pytest.mark.parametrize(
    ("devices", "per_device", "cuda_count", "lanes"),
    [
        ("auto", 1, 0, ["cpu"]),
        ("auto", 2, 0, ["cpu", "cpu"]),
        ("auto", 1, 2, ["cuda:0", "cuda:1"]),
        ("auto", 2, 2, ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
        ("cuda", 1, 1, ["cuda:0"]),
        ("cpu", 3, 4, ["cpu", "cpu", "cpu"]),
        ("cuda:1, cuda:0", 1, 2, ["cuda:1", "cuda:0"]),
    ],
)
def test_lanes_follow_the_devices_setting(devices, per_device, cuda_count, lanes) -> None:
    assert plan_lanes(devices, per_device, cuda_count=cuda_count) == lanes


@pytest.mark.parametrize(
    ("devices", "cuda_count"), [("cuda", 0), ("cuda:2", 2), ("tpu", 0), ("cuda:0,cpu", 1)]
)
def test_devices_that_are_not_there_are_refused(devices: str, cuda_count: int) -> None:
    with pytest.raises(InvalidParameter) as info:
        plan_lanes(devices, 1, cuda_count=cuda_count)
    assert info.value.parameter == "devices"


def test_this_machine_gets_a_lane() -> None:
    import torch

    lanes = plan_lanes("auto", 1)
    assert lanes == (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else ["cpu"]
    )
