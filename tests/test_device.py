"""deforhmr_model.device: the one device resolver (auto = CUDA, then MPS, then CPU)."""
import logging

import pytest
import torch

from deforhmr_model.device import DeviceError, mps_available, resolve_device


def test_auto_picks_the_best_available_and_says_so(caplog):
    want = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    with caplog.at_level(logging.INFO, logger="deforhmr.device"):
        dev = resolve_device("auto")
        assert resolve_device(None) == dev
    assert dev.type == want
    notes = [r.getMessage() for r in caplog.records if r.name == "deforhmr.device"]
    assert len(notes) == 2 and all("\n" not in n and f"-> {dev}" in n for n in notes)


def test_explicit_devices_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(DeviceError, match="meta: not a device that can run the model"):
        resolve_device("meta")
    with pytest.raises(DeviceError, match="'gpu0': unknown device"):
        resolve_device("gpu0")
    with pytest.raises(DeviceError, match="cuda:99"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available.*use auto or cpu"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    if not mps_available():
        with pytest.raises(DeviceError, match="MPS"):
            resolve_device("mps")
    assert issubclass(DeviceError, ValueError)  # the CLI guards report it as one line


def test_pipeline_uses_the_resolver():
    from deforhmr_model.pipeline import HMRPipeline
    with pytest.raises(DeviceError, match="meta"):
        HMRPipeline(device="meta")
