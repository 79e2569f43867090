"""ComfyUI: 'download: hmr2' in Load DeforHMR Model (from a local 127.0.0.1 mirror, with the
host's progress bar), method auto, and the Attention Map node, as API-format graphs."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from . import comfy_runner as cr
from .test_download import _hmr2_release, _Server

BODY_AUTO = "auto (SMPL neutral if installed, else open body)"


@pytest.fixture
def pack(photos, tmp_path):
    d = tmp_path / "input"
    d.mkdir()
    (d / "000000000785.jpg").symlink_to(photos / "coco" / "000000000785.jpg")
    core = cr.setup_host("bare", d)
    cr.set_output_dir(tmp_path / "output")
    return cr.load_pack(), core


class _ProgressBar:                     # the host's comfy.utils.ProgressBar, recording updates
    made: list = []

    def __init__(self, total):
        self.total, self.value = total, 0
        _ProgressBar.made.append(self)

    def update(self, n):
        self.value += n


def _graph(checkpoint: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "000000000785.jpg"}},
        "2": {"class_type": "DeforHMRLoadModel", "inputs": {"checkpoint": checkpoint, "body_model": BODY_AUTO,
                                                             "device": "cpu", "precision": "auto"}},
        "3": {"class_type": "DeforHMRRecover", "inputs": {"model": ["2", 0], "image": ["1", 0], "frames_per_batch": 1}},
        "4": {"class_type": "DeforHMRAttention", "inputs": {"model": ["2", 0], "image": ["1", 0], "layer": -1,
                                                            "head": 7, "query": -1}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "att/overlay"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 1], "filename_prefix": "att/crops"}},
        "7": {"class_type": "DeforHMRRender", "inputs": {"image": ["1", 0], "results": ["3", 0], "alpha": 0.8,
                                                         "view": "camera"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "att/mesh"}},
    }


def test_download_choice_then_auto_and_attention(pack, tmp_path, monkeypatch):
    module, core = pack
    loader = sys.modules[module.__name__ + ".nodes.loader"]
    weights = tmp_path / "models_deforhmr"
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(weights))
    server = _Server()
    server.thread.start()
    try:
        archive, _ = _hmr2_release()
        server.files["/mirror/hmr2_data.tar.gz"] = archive
        monkeypatch.setenv("DEFORHMR_DOWNLOAD_MIRROR", server.url("/mirror"))
        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = _ProgressBar
        monkeypatch.setitem(sys.modules, "comfy.utils", utils)

        choices = loader.checkpoint_choices()
        assert choices[:2] == [loader.AUTO_CHECKPOINT, loader.NO_CHECKPOINT] and "download: hmr2" in choices
        assert loader.LoadDeforHMRModel.INPUT_TYPES()["required"]["checkpoint"][1]["default"] == loader.AUTO_CHECKPOINT
        runner = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS})
        done = runner.run(_graph("download: hmr2"))
        assert server.ranges == [None]
        assert (weights / "hmr2.safetensors").is_file() and not (weights / "hmr2_data.tar.gz").exists()
        bar = _ProgressBar.made[0]
        assert bar.total == 1000 and bar.value == 1000               # the node's bar reached the end
        results = done["3"]["outputs"][0]
        assert results[0].people and all(p.method == "network:hmr2" for p in results[0].people)
        overlay, crops = done["4"]["outputs"]
        assert overlay.shape[1:] == done["1"]["outputs"][0].shape[1:]
        assert crops.shape[1:] == (512, 384, 3) and crops.shape[0] == len(results[0].people)

        assert "download: hmr2" not in loader.checkpoint_choices()    # installed now
        handle = loader.LoadDeforHMRModel().load(loader.AUTO_CHECKPOINT, BODY_AUTO, "cpu")[0]
        assert handle.pipeline.model_name == "hmr2" and handle.label.startswith("hmr2 + ")   # auto finds it
        assert server.ranges == [None]                                # no second download
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_attention_node_needs_a_network(pack, tmp_path, monkeypatch):
    module, core = pack
    loader = sys.modules[module.__name__ + ".nodes.loader"]
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))        # no ~/.cache/deforhmr of this machine
    runner = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS})
    with pytest.raises(cr.NodeExecutionError, match="attention maps need a network"):
        runner.run(_graph(loader.AUTO_CHECKPOINT))                    # auto without a checkpoint = fit
