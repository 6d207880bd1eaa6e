"""Platform choice: auto prefers CUDA > OpenCL > CPU; an unusable request is a clear error."""

from __future__ import annotations

import pytest

from starmd.errors import StarmdInputError
from starmd.simulate import simulate
from starmd.simulate.platforms import _works, available_platforms, select_platform

HAS_CUDA = "CUDA" in available_platforms() and _works("CUDA")
HAS_GPU = HAS_CUDA or ("OpenCL" in available_platforms() and _works("OpenCL"))


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(StarmdInputError) as err:
        select_platform("CUDA")
    message = str(err.value)
    assert message.startswith("--platform CUDA: not available on this machine")
    assert "CPU" in message and "--platform auto" in message


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_simulate_on_cuda_without_cuda_fails_before_any_work(trpcage_pdb, tmp_path):
    with pytest.raises(StarmdInputError, match="--platform CUDA"):
        simulate(trpcage_pdb, tmp_path / "out", ns=0.01, platform="CUDA", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU platform")
def test_auto_falls_back_to_cpu_with_threads():
    platform, properties = select_platform("auto", threads=1)
    assert platform.getName() == "CPU"
    assert properties == {"Threads": "1"}


def test_unknown_platform_is_an_error():
    with pytest.raises(StarmdInputError, match="--platform TPU: not available"):
        select_platform("TPU")
