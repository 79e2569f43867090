"""SMPL-format body model files: read ``.pkl`` without chumpy, read and write ``.npz``.

Only numpy is needed here (scipy is imported when a pickle holds a sparse matrix), so
the open-body generator (``tools/make_open_body.py``) can write files with
:func:`write_body_npz` from another virtual environment.

Files understood
----------------
* The official SMPL pickles (``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl`` and the
  male/female/v1.1.0 files; ``platform_notes.md`` "smplx and SMPL model files"). They hold
  chumpy objects and scipy sparse matrices. They are read by :class:`_RestrictedUnpickler`,
  which builds only numpy arrays, scipy csc/csr matrices and builtin containers, maps every
  ``chumpy.*`` class to a stub that keeps the stored array (``x``), and refuses any other
  class by name (:class:`UnsafePickleError`), so no code from the file is executed.
  chumpy itself is never imported.
* ``.npz`` files with the official array names (``v_template`` (V,3), ``f`` (F,3),
  ``J_regressor`` (24,V), ``weights`` (V,24), ``kintree_table`` (2,24), ``shapedirs``
  (V,3,S), ``posedirs`` (V,3,207)) or our own aliases (``faces``, ``lbs_weights``,
  ``parents``; ``posedirs`` may also be (207, V*3)). Optional keys written by
  :func:`write_body_npz`: ``joint_names`` (24,) str, ``face_vertex_names`` (5,) str with
  ``face_vertex_ids`` (5,) int, ``extra_regressor__<name>`` (K,V), and the 0-d strings
  ``id``, ``name``, ``license``, ``source``, ``generator_version``. Files are read with
  ``allow_pickle=False``.

Units are metres; the frame is SMPL's (Y up, the body facing +Z, +X the body's left).
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from deforhmr_model.body.layouts import COCO_FACE_NAMES

__all__ = [
    "SMPLFileError",
    "UnsafePickleError",
    "NUM_JOINTS",
    "NUM_BETAS",
    "read_smpl_pkl",
    "read_body_arrays",
    "write_body_npz",
    "convert_smpl",
    "smpl_id",
]

NUM_JOINTS = 24
NUM_BETAS = 10
NUM_POSE_FEATURES = 9 * (NUM_JOINTS - 1)  # 207: (R - I) of the 23 body joints
FACE_KEYS = COCO_FACE_NAMES  # the face points an SMPL-format file gives as vertex ids
EXTRA_PREFIX = "extra_regressor__"
META_KEYS = ("id", "name", "license", "source", "generator_version")

# official key -> our alias (either is accepted when reading)
_ALIASES = {"f": "faces", "weights": "lbs_weights", "kintree_table": "parents"}


class SMPLFileError(ValueError):
    """A body model file cannot be used. The message names the file, the problem and the fix."""


class UnsafePickleError(SMPLFileError):
    """A pickle references a class outside the allowed set; it was not loaded (nothing executed)."""


# ----------------------------------------------------------------------------- reading
def read_body_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """Read an SMPL-format ``.npz`` or ``.pkl`` into validated, canonical arrays.

    Returns a dict with ``v_template`` (V,3) f32, ``faces`` (F,3) int64, ``J_regressor``
    (24,V) f32 (dense), ``lbs_weights`` (V,24) f32, ``parents`` (24,) int64 (``parents[0]
    == -1``), ``shapedirs`` (V,3,10) f32 (first 10 components kept; fewer are zero-padded),
    ``posedirs`` (207, V*3) f32 or None (absent or all zero), ``joint_names`` list[str] or
    None, ``face_vertex_ids`` dict[str,int] or None, ``extra_regressors`` dict name -> (K,V)
    f32, and ``meta`` dict of the strings in :data:`META_KEYS` that the file has.

    Raises:
        FileNotFoundError: the path does not exist.
        SMPLFileError: unknown suffix, missing key, wrong shape, refused pickle content.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"body model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        raw = _read_npz(path)
    elif suffix == ".pkl":
        raw = read_smpl_pkl(path)
        if not isinstance(raw, dict):
            raise SMPLFileError(f"{path}: expected a pickled dict of SMPL arrays, got {type(raw).__name__}")
    else:
        raise SMPLFileError(f"{path}: unknown body model file type {path.suffix!r}; use an SMPL .pkl or .npz")
    return _canonical(raw, path)


# every key _canonical reads (official names and our aliases); other entries are never read
_NPZ_KEYS = frozenset({"v_template", "f", "faces", "J_regressor", "weights", "lbs_weights", "kintree_table",
                       "parents", "shapedirs", "posedirs", "joint_names", "face_vertex_names",
                       "face_vertex_ids", *META_KEYS})


def _read_npz(path: Path) -> dict[str, Any]:
    """The body keys of an npz, sizes checked from each entry's header before reading
    (:func:`deforhmr_model.files.npz.read_npz`); object entries become :class:`_Refused`."""
    from deforhmr_model.files.npz import NpzReadError, ObjectEntry, read_npz
    try:
        raw = read_npz(path, lambda k: k in _NPZ_KEYS or k.startswith(EXTRA_PREFIX))
    except NpzReadError as e:
        raise SMPLFileError(f"{e}; use an SMPL .npz written by `deforhmr convert-smpl`") from None
    return {k: _Refused(k) if isinstance(v, ObjectEntry) else v for k, v in raw.items()}


class _Refused:
    """Placeholder for an npz entry stored as pickled Python objects (not loaded)."""

    def __init__(self, key: str):
        self.key = key


def _get(raw: dict, key: str, path: Path, required: bool = True):
    alias = _ALIASES.get(key)
    val = raw.get(key, raw.get(alias) if alias else None)
    if isinstance(val, _Refused):
        raise SMPLFileError(f"{path}: array {val.key!r} is stored as pickled Python objects, which are not "
                            f"loaded; convert the original .pkl with `deforhmr convert-smpl`")
    if val is None and required:
        names = f"{key!r}" + (f" (or {alias!r})" if alias else "")
        raise SMPLFileError(f"{path}: missing array {names}; not an SMPL-format body model file")
    return val


def _dense(val) -> np.ndarray:
    if hasattr(val, "toarray"):  # scipy sparse
        return val.toarray()
    return np.asarray(val)


def _expect(name: str, arr: np.ndarray, shape: tuple, path: Path) -> None:
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise SMPLFileError(f"{path}: array {name!r} must have shape {want}, got {tuple(arr.shape)}")


def _canonical(raw: dict, path: Path) -> dict[str, Any]:
    v = np.asarray(_dense(_get(raw, "v_template", path)), np.float32)
    _expect("v_template", v, (None, 3), path)
    V = v.shape[0]
    faces = np.asarray(_dense(_get(raw, "f", path))).astype(np.int64)
    _expect("f", faces, (None, 3), path)
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise SMPLFileError(f"{path}: face indices must lie in [0, {V}), got [{faces.min()}, {faces.max()}]")
    J_reg = np.asarray(_dense(_get(raw, "J_regressor", path)), np.float32)
    _expect("J_regressor", J_reg, (NUM_JOINTS, V), path)
    weights = np.asarray(_dense(_get(raw, "weights", path)), np.float32)
    _expect("weights", weights, (V, NUM_JOINTS), path)
    parents = _parents(_get(raw, "kintree_table", path), path)
    shapedirs = np.asarray(_dense(_get(raw, "shapedirs", path)), np.float32)
    _expect("shapedirs", shapedirs, (V, 3, None), path)
    if shapedirs.shape[2] >= NUM_BETAS:
        shapedirs = np.ascontiguousarray(shapedirs[:, :, :NUM_BETAS])
    else:
        shapedirs = np.concatenate([shapedirs, np.zeros((V, 3, NUM_BETAS - shapedirs.shape[2]), np.float32)], 2)
    posedirs = _posedirs(_get(raw, "posedirs", path, required=False), V, path)

    names = _get(raw, "joint_names", path, required=False)
    joint_names = [str(n) for n in np.asarray(names).tolist()] if names is not None else None
    if joint_names is not None and len(joint_names) != NUM_JOINTS:
        raise SMPLFileError(f"{path}: 'joint_names' must list {NUM_JOINTS} names, got {len(joint_names)}")
    face_ids = None
    if "face_vertex_ids" in raw and "face_vertex_names" in raw:
        keys = [str(k) for k in np.asarray(_get(raw, "face_vertex_names", path)).tolist()]
        ids = np.asarray(_get(raw, "face_vertex_ids", path)).astype(np.int64).tolist()
        face_ids = dict(zip(keys, ids, strict=False))
        if len(keys) != len(ids) or set(face_ids) != set(FACE_KEYS) or not all(0 <= i < V for i in ids):
            raise SMPLFileError(f"{path}: face_vertex_names/ids must give {FACE_KEYS} -> vertex index in [0, {V})")
    extra = {}
    for key, val in raw.items():
        if isinstance(key, str) and key.startswith(EXTRA_PREFIX):
            if not key[len(EXTRA_PREFIX):].isidentifier():
                raise SMPLFileError(f"{path}: extra regressor name in {key!r} must be a Python identifier")
            reg = np.asarray(_dense(_get(raw, key, path)), np.float32)
            _expect(key, reg, (None, V), path)
            extra[key[len(EXTRA_PREFIX):]] = reg
    meta = {k: str(np.asarray(raw[k]).item()) for k in META_KEYS
            if k in raw and not isinstance(raw[k], _Refused) and np.asarray(raw[k]).ndim == 0}
    for name, arr in (("v_template", v), ("J_regressor", J_reg), ("weights", weights), ("shapedirs", shapedirs),
                      ("posedirs", posedirs), *((EXTRA_PREFIX + k, r) for k, r in extra.items())):
        if arr is not None and not np.isfinite(arr).all():
            raise SMPLFileError(f"{path}: array {name!r} holds NaN or infinite values; the file is damaged "
                                f"(re-convert the original SMPL file with `deforhmr convert-smpl`)")
    return dict(v_template=v, faces=faces, J_regressor=J_reg, lbs_weights=weights, parents=parents,
                shapedirs=shapedirs, posedirs=posedirs, joint_names=joint_names,
                face_vertex_ids=face_ids, extra_regressors=extra, meta=meta)


def _parents(val, path: Path) -> np.ndarray:
    arr = np.asarray(_dense(val))
    if arr.ndim == 2 and arr.shape == (2, NUM_JOINTS):  # kintree_table: row 0 parents, row 1 ids
        arr = arr[0]
    _expect("kintree_table", arr, (NUM_JOINTS,), path)
    parents = arr.astype(np.int64)
    parents[0] = -1  # the official files store 2**32 - 1 for the root
    if not all(0 <= parents[i] < i for i in range(1, NUM_JOINTS)):
        raise SMPLFileError(f"{path}: kintree_table parents must precede their children, got {parents.tolist()}")
    return parents


def _posedirs(val, V: int, path: Path) -> np.ndarray | None:
    if val is None:
        return None
    arr = np.asarray(_dense(val), np.float32)
    if arr.shape == (V, 3, NUM_POSE_FEATURES):        # official layout
        arr = arr.reshape(V * 3, NUM_POSE_FEATURES).T
    elif arr.shape == (V * 3, NUM_POSE_FEATURES):
        arr = arr.T
    elif arr.shape != (NUM_POSE_FEATURES, V * 3):     # smplx buffer layout
        raise SMPLFileError(f"{path}: array 'posedirs' must have shape ({V}, 3, {NUM_POSE_FEATURES}) or "
                            f"({NUM_POSE_FEATURES}, {V * 3}), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr) if np.any(arr) else None


# ----------------------------------------------------------------------------- pickles
def read_smpl_pkl(path: str | os.PathLike) -> Any:
    """Unpickle an SMPL ``.pkl`` with the restricted unpickler (no chumpy, no code execution).

    Chumpy objects become their stored ndarray, scipy csc/csr matrices stay sparse (scipy
    is imported only then). Python-2 pickles are read with ``encoding="latin1"``.

    Raises:
        UnsafePickleError: the pickle references a class outside the allowed set (named).
        SMPLFileError: the file is not a readable pickle, or a chumpy object has no array.
    """
    path = Path(path)
    return safe_unpickle(path.read_bytes(), path, kind="SMPL pickle")


def safe_unpickle(data: bytes, source: str | os.PathLike = "<pickle>", kind: str = "pickle") -> Any:
    """Unpickle bytes with the allow-list unpickler used for SMPL files: numpy arrays, scipy
    csc/csr matrices, chumpy arrays (as ndarrays) and plain containers; nothing else is
    constructed and no pickled code runs. Also used for joint regressors and webdataset
    ``.pyd`` labels.

    Raises:
        UnsafePickleError: a class outside the allowed set is referenced (named).
        SMPLFileError: not a readable pickle (``source`` names it in the message).
    """
    src = Path(str(source))
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), src).load()
    except SMPLFileError:
        raise
    except Exception as e:  # truncated/corrupt pickles raise many types
        raise SMPLFileError(f"{src}: not a readable {kind} ({type(e).__name__}: {e})") from None
    return _resolve(obj, src)


class _ChumpyStub:
    """Stands in for any ``chumpy.*`` class; keeps the pickled state (its array is ``x``)."""

    chumpy_class = "chumpy.?"

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}


class _SparseStub:
    """Stands in for a scipy.sparse csc/csr matrix; rebuilt from its arrays after loading."""

    fmt = "csc"

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


_SAFE_BUILTINS = {"set", "frozenset", "list", "dict", "tuple", "object", "bytearray", "bytes", "complex", "slice"}
_NUMPY_CALLABLES = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _np_core("multiarray")._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _np_core("multiarray")._reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda: _np_core("multiarray").scalar,
    ("numpy._core.multiarray", "scalar"): lambda: _np_core("multiarray").scalar,
    ("numpy.core.numeric", "_frombuffer"): lambda: _np_core("numeric")._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): lambda: _np_core("numeric")._frombuffer,
}
_SPARSE_NAMES = {"csc_matrix": "csc", "csr_matrix": "csr", "csc_array": "csc", "csr_array": "csr"}
_stub_classes: dict[tuple[str, str], type] = {}


def _np_core(sub: str):
    import importlib
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{sub}")


def _stub(base: type, module: str, name: str, **attrs) -> type:
    key = (module, name)
    if key not in _stub_classes:
        _stub_classes[key] = type(f"{base.__name__}[{module}.{name}]", (base,), attrs)
    return _stub_classes[key]


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor for stubs only: ``object.__new__(cls)``."""
    if base is not object or not isinstance(cls, type) or not issubclass(cls, (_ChumpyStub, _SparseStub)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor({getattr(cls, '__name__', cls)!r}, "
                                f"{getattr(base, '__name__', base)!r})")
    return object.__new__(cls)


def _safe_newobj(cls, *args):
    if not isinstance(cls, type) or not issubclass(cls, (_ChumpyStub, _SparseStub)):
        raise UnsafePickleError(f"refusing copyreg.__newobj__({getattr(cls, '__name__', cls)!r})")
    return object.__new__(cls)


def _safe_encode(obj, encoding="utf-8", errors="strict"):
    """_codecs.encode as Python 3 writes bytes for protocol 2 (latin1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1", errors)


class _RestrictedUnpickler(pickle.Unpickler):
    """Allow-list unpickler for SMPL files (see module docstring)."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _stub(_ChumpyStub, module, name, chumpy_class=f"{module}.{name}")
        if module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            return _stub(_SparseStub, module, name, fmt=_SPARSE_NAMES[name])
        if (module, name) in _NUMPY_CALLABLES:
            return _NUMPY_CALLABLES[(module, name)]()
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            import builtins
            return getattr(builtins, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("copy_reg", "copyreg") and name == "__newobj__":
            return _safe_newobj
        if module == "_codecs" and name == "encode":
            return _safe_encode
        raise UnsafePickleError(
            f"{self._path}: refusing to load class {module}.{name} from a pickle: SMPL files hold only "
            f"numpy arrays, scipy sparse matrices and chumpy arrays, so this file is not an SMPL model "
            f"(or was altered); nothing from it was executed")


def _resolve(obj: Any, path: Path) -> Any:
    """Replace stubs by arrays / scipy matrices, recursively through containers."""
    if isinstance(obj, _ChumpyStub):
        x = getattr(obj, "state", {}).get("x")
        if isinstance(x, _ChumpyStub):
            return _resolve(x, path)
        if not isinstance(x, np.ndarray):
            raise SMPLFileError(f"{path}: chumpy object of class {obj.chumpy_class} stores no array (a derived "
                                f"expression); load the file once with chumpy and save its arrays as .npz")
        return x
    if isinstance(obj, _SparseStub):
        s = getattr(obj, "state", {})
        shape = s.get("_shape", s.get("shape"))
        if shape is None or any(k not in s for k in ("data", "indices", "indptr")):
            raise SMPLFileError(f"{path}: a pickled sparse matrix lacks data/indices/indptr/shape")
        import scipy.sparse as sp
        ctor = sp.csc_matrix if obj.fmt == "csc" else sp.csr_matrix
        return ctor((s["data"], s["indices"], s["indptr"]), shape=tuple(int(n) for n in shape))
    if isinstance(obj, dict):
        return {k: _resolve(v, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, path) for v in obj)
    return obj


def smpl_id(filename: str) -> str:
    """Body id from an SMPL file name: "smpl_female", "smpl_male", "smpl_neutral" or "smpl"."""
    low = filename.lower()
    for gender, keys in (("female", ("female", "_f_")), ("male", ("male", "_m_")), ("neutral", ("neutral",))):
        if any(k in low for k in keys):
            return f"smpl_{gender}"
    return "smpl"


# ----------------------------------------------------------------------------- writing
def write_body_npz(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, str] | None = None,
                   compress: bool = True) -> Path:
    """Write a body model as ``.npz`` with the official SMPL array names (atomically).

    Args:
        path: destination file (its folder must exist).
        arrays: canonical keys as returned by :func:`read_body_arrays`: ``v_template``,
            ``faces``, ``J_regressor``, ``lbs_weights``, ``parents``, ``shapedirs``
            (V,3,S), optional ``posedirs`` ((207, V*3); omitted when None or all zero),
            ``joint_names``, ``face_vertex_ids``, ``extra_regressors``.
        meta: strings among :data:`META_KEYS` (id, name, license, source, generator_version).
        compress: use ``np.savez_compressed``.
    Returns:
        The path written. Raises OSError if the folder is not writable.
    """
    from deforhmr_model.files.atomic import atomic_write

    V = len(arrays["v_template"])
    parents = np.asarray(arrays["parents"], np.int64)
    out: dict[str, np.ndarray] = {
        "v_template": np.asarray(arrays["v_template"], np.float32),
        "f": np.asarray(arrays["faces"], np.int32),
        "J_regressor": np.asarray(_dense(arrays["J_regressor"]), np.float32),
        "weights": np.asarray(arrays["lbs_weights"], np.float32),
        "kintree_table": np.stack([parents, np.arange(len(parents))]).astype(np.int64),
        "shapedirs": np.asarray(arrays["shapedirs"], np.float32),
    }
    pd = arrays.get("posedirs")
    if pd is not None and np.any(pd):
        out["posedirs"] = np.asarray(pd, np.float32).T.reshape(V, 3, NUM_POSE_FEATURES)
    if arrays.get("joint_names") is not None:
        out["joint_names"] = np.asarray(list(arrays["joint_names"]), dtype=str)
    if arrays.get("face_vertex_ids"):
        fv = arrays["face_vertex_ids"]
        out["face_vertex_names"] = np.asarray(list(fv), dtype=str)
        out["face_vertex_ids"] = np.asarray([int(fv[k]) for k in fv], np.int64)
    for name, reg in (arrays.get("extra_regressors") or {}).items():
        out[EXTRA_PREFIX + name] = np.asarray(_dense(reg), np.float32)
    for k, v in (meta or {}).items():
        if k not in META_KEYS:
            raise ValueError(f"write_body_npz: unknown meta key {k!r}; expected one of {META_KEYS}")
        out[k] = np.asarray(str(v))
    save = np.savez_compressed if compress else np.savez
    return atomic_write(path, lambda f: save(f, **out))


def convert_smpl(pkl_path: str | os.PathLike, npz_path: str | os.PathLike) -> Path:
    """Convert an official SMPL ``.pkl`` once to ``.npz`` (read without chumpy, see module doc).

    Keeps the official arrays (first 10 shape components, dense J_regressor) and records
    ``id`` (the npz file stem, e.g. ``SMPL_NEUTRAL``), ``name``, ``license`` and ``source``.
    The output is written atomically; the input is never modified.

    Raises:
        FileNotFoundError: ``pkl_path`` does not exist.
        SMPLFileError: the pickle is not an SMPL model or holds refused classes.
        OSError: the output folder is not writable.
    """
    pkl_path, npz_path = Path(pkl_path), Path(npz_path)
    if npz_path.suffix.lower() != ".npz":
        raise SMPLFileError(f"output file must end in .npz, got {npz_path.name!r}")
    arrays = read_body_arrays(pkl_path)
    meta = {"id": smpl_id(pkl_path.name), "name": f"SMPL ({pkl_path.name})",
            "license": "SMPL Model License (MPI; non-commercial research; no redistribution)",
            "source": f"converted by deforhmr convert-smpl from {pkl_path.name}"}
    return write_body_npz(npz_path, arrays, meta)
