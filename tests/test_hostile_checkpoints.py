"""Hostile model files: nothing named by a pickled torch file runs (issue 10).

Every exploit here would create a marker file if any of its code ran; the tests build the files
themselves (hand-written protocol-2 pickles inside real torch zip archives, and legacy non-zip
torch files), load them through ``load_torch_file`` / the importers / the CLI, and check that the
load is refused with one complete sentence naming the global, and that the marker does not exist.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from deforhmr_model.network.checkpoint import (CheckpointError, allowed_globals, convert_checkpoint,
                                               import_hmr2_checkpoint, load_model, load_torch_file,
                                               load_vitpose_backbone)
from deforhmr_model.network.model import build_model

# ----------------------------------------------------------------------------- pickle writing

def _global(name: str) -> bytes:
    module, _, attr = name.rpartition(".")
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def _call(func: bytes, *args: bytes) -> bytes:
    """Pickle ops that push ``func(*args)`` (func and args are op sequences)."""
    return func + b"(" + b"".join(args) + b"tR"


def _dict_with(value: bytes) -> bytes:
    """A protocol-2 pickle of ``{"state_dict": {}, "x": value}``."""
    return b"\x80\x02}" + _str("state_dict") + b"}s" + _str("x") + value + b"s."


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A real torch.save zip archive whose data.pkl is replaced by ``data_pkl``."""
    buf = io.BytesIO()
    torch.save({"state_dict": {}}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = data_pkl if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return path


class _Reduce:
    """An object that pickles as ``func(*args)``, for torch.save in the legacy format."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _exploits(tmp: Path, marker: Path) -> dict[str, Path]:
    """name -> hostile file; each would create ``marker`` if its code ran."""
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    runstring = _global("numpy.testing._private.utils.runstring")
    empty_dict = b"}"
    files: dict[str, Path] = {}

    def add(name, pkl):
        files[name] = _torch_zip(tmp / f"{name}.ckpt", _dict_with(pkl))

    # the reported exploit and other numpy callables
    add("numpy_runstring", _call(runstring, _str(code), empty_dict))
    npy = tmp / "payload.npy"
    np.save(npy, np.array([_Reduce(eval, code)], dtype=object), allow_pickle=True)
    add("numpy_load_nested_pickle", _call(_global("numpy.load"), _str(str(npy)), b"\x88"))
    add("numpy_core_runstring_alias", _call(_global("numpy.core.testing._private.utils.runstring"),
                                            _str(code), empty_dict))
    add("numpy_reconstruct_object_array",
        _call(_global("numpy._core.multiarray._reconstruct"), _global("numpy.ndarray"),
              b"(K\x00\x85", _str("b")) )
    # builtins and os
    add("builtins_eval", _call(_global("builtins.eval"), _str(code)))
    add("builtins_exec", _call(_global("builtins.exec"), _str(code)))
    add("python2_builtin_eval", _call(_global("__builtin__.eval"), _str(code)))
    add("os_system", _call(_global("os.system"), _str(f"touch {marker}")))
    add("posix_system", _call(_global("posix.system"), _str(f"touch {marker}")))
    add("builtins_getattr", _call(_call(_global("builtins.getattr"), _global("builtins.__import__"),
                                        _str("__call__")), _str("os")))
    # torch._utils / torch._tensor gadgets (functions torch itself allows, fed a hostile callable)
    add("torch_import_dotted_name", _call(_call(_global("torch._utils._import_dotted_name"),
                                                _str("os.system")), _str(f"touch {marker}")))
    add("torch_rebuild_from_type_v2", _call(_global("torch._tensor._rebuild_from_type_v2"), runstring,
                                            _global("torch.Tensor"), b"(" + _str(code) + empty_dict + b"t",
                                            empty_dict))
    add("torch_rebuild_from_type_v2_eval", _call(_global("torch._tensor._rebuild_from_type_v2"),
                                                 _global("builtins.eval"), _global("torch.Tensor"),
                                                 b"(" + _str(code) + b"t", empty_dict))
    # nested pickles: bytes (via _codecs.encode, which torch allows) handed to a loader
    inner = pickle.dumps(_Reduce(eval, code), protocol=2).decode("latin1")
    as_bytes = _call(_global("_codecs.encode"), _str(inner), _str("latin1"))
    add("pickle_loads_nested", _call(_global("pickle.loads"), as_bytes))
    add("_pickle_loads_nested", _call(_global("_pickle.loads"), as_bytes))
    add("torch_load_nested", _call(_global("torch.load"), _str(str(tmp / "inner.pt"))))
    torch.save(_Reduce(eval, code), tmp / "inner.pt")       # what torch.load above would open
    # a stand-in class of the allow-list abused as a callable that does something else
    add("yacs_cfgnode_setstate", b"\x80\x02" + _global("yacs.config.CfgNode") + b")\x81" + b"}" +
        _str("__setstate__") + _global("builtins.eval") + b"sb")
    # legacy (non-zip) torch format, the reported exploit and a builtin
    for name, func, args in (("legacy_numpy_runstring", None, (code, {})),
                             ("legacy_builtins_exec", exec, (code,))):
        if func is None:
            from numpy.testing._private.utils import runstring as func
        path = tmp / f"{name}.pth"
        torch.save({"state_dict": {}, "x": _Reduce(func, *args)}, path, _use_new_zipfile_serialization=False)
        files[name] = path
    return files


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "pwned"
    return _exploits(tmp_path, marker), marker


def _assert_refused(message: str, path: Path):
    assert str(path) in message
    assert "weights_only" not in message and "trust" not in message, message
    assert message.rstrip().endswith("."), f"cut mid-sentence: {message!r}"
    assert "\n" not in message


def test_every_exploit_is_refused_and_runs_nothing(hostile):
    files, marker = hostile
    assert len(files) >= 18
    for name, path in files.items():
        with pytest.raises(CheckpointError) as err:
            load_torch_file(path)
        _assert_refused(str(err.value), path)
        assert not marker.exists(), f"{name} ran code"


def test_refusal_names_the_global(hostile):
    files, marker = hostile
    with pytest.raises(CheckpointError, match=r"names numpy\.testing\._private\.utils\.runstring, which a "
                                              r"model file does not need"):
        load_torch_file(files["numpy_runstring"])
    with pytest.raises(CheckpointError, match=r"names torch\._utils\._import_dotted_name"):
        load_torch_file(files["torch_import_dotted_name"])
    with pytest.raises(CheckpointError, match=r"names builtins\.eval,"):
        load_torch_file(files["builtins_eval"])
    assert not marker.exists()


def test_the_exploit_is_refused_by_every_entry_point(hostile, tmp_path):
    files, marker = hostile
    evil = files["numpy_runstring"]
    for call in (lambda: import_hmr2_checkpoint(evil), lambda: load_model(evil),
                 lambda: convert_checkpoint(evil, tmp_path / "x.safetensors"),
                 lambda: load_vitpose_backbone(build_model("def-m", "vit-tiny"), files["legacy_numpy_runstring"])):
        with pytest.raises(CheckpointError):
            call()
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()


def test_the_allow_list_is_exact_names():
    names = [n for _, n in allowed_globals()]
    assert "yacs.config.CfgNode" in names and "numpy.dtype" in names
    assert all(not n.endswith((".", "*")) and n.count(".") >= 1 for n in names)
    objs = [o for o, _ in allowed_globals()]
    assert eval not in objs and exec not in objs and os.system not in objs


# The CLI's one-line refusal (infer --model, convert-checkpoint) is in test_bad_input_corpus.py.
