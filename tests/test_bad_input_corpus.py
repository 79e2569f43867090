"""The bad-input corpus (issue 10), generated here and run through the ``deforhmr`` CLI.

Two subprocesses (tests/cli_corpus_driver.py, address space limited to its size + 1.5 GB):

* **usage** — options and model/body files that stop the run: exit status 2, exactly one
  ``deforhmr: error:`` line naming the problem, no traceback, no output file, and nothing that a
  hostile model file asked to run (marker file absent).
* **batch** — one run over good and bad images (too small, strips, truncated, not images, a full
  disk while writing one image) and one with user boxes (clipped; a box outside an image refused
  for that image): one line per bad item, the good images written, no file of a failed image,
  stale outputs of a re-written stem removed, an unrelated file kept.

Readers of hostile npz files are also run alone under a 1 GB address-space limit (no torch).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .hostile_files import write_npz_bomb
from .test_hostile_checkpoints import _call, _dict_with, _global, _str, _torch_zip

REPO = Path(__file__).resolve().parents[1]
OPEN_BODY = REPO / "deforhmr_model" / "weights" / "open_body.npz"
NOTICE = "No SMPL model installed"          # the informational open-body line, not an error
DEVICE_NOTICE = "deforhmr: device auto ->"   # the informational line: which device "auto" chose


def _run_driver(cases: list[dict], tmp: Path) -> dict[str, dict]:
    (tmp / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "cli_corpus_driver.py"), str(tmp / "cases.json"),
                           str(tmp / "report.json")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {c["name"]: c for c in json.loads((tmp / "report.json").read_text())["cases"]}


def _lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(NOTICE)
            and not ln.startswith(DEVICE_NOTICE) and "TensorFlow Lite" not in ln]


def _body_variants(tmp: Path) -> dict[str, Path]:
    base = dict(np.load(OPEN_BODY, allow_pickle=False))
    out = {}
    raw = OPEN_BODY.read_bytes()
    out["truncated"] = tmp / "truncated.npz"
    out["truncated"].write_bytes(raw[: len(raw) // 2])
    out["object"] = tmp / "object.npz"          # an optional array stored as pickled objects
    np.savez(out["object"], **{**base, "joint_names": np.array([object()] * 24, dtype=object)})
    nan = base["v_template"].copy()
    nan[7, 1] = np.nan
    out["nan"] = tmp / "nan.npz"
    np.savez(out["nan"], **{**base, "v_template": nan})
    out["bomb"] = write_npz_bomb(tmp / "bomb.npz", {k: v for k, v in base.items() if k != "v_template"},
                                 "v_template", (330_000_000, 3))          # 3.96 GB of zeros, ~4 MB
    assert out["bomb"].stat().st_size < 8 * 2**20
    return out


def test_usage_errors_are_one_line_and_run_nothing(tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(img)
    out = tmp_path / "out"
    marker = tmp_path / "pwned"
    exploit = _torch_zip(tmp_path / "evil.ckpt", _dict_with(_call(
        _global("numpy.testing._private.utils.runstring"), _str(f"open({str(marker)!r}, 'w')"), b"}")))
    from deforhmr_model.network.checkpoint import save_checkpoint
    from deforhmr_model.network.model import build_model
    torch.manual_seed(0)
    model = build_model("def-m", "vit-tiny", depth=1, dim=32, mlp_dim=32)
    with torch.no_grad():
        model.smpl_head.deccam.weight[0, 0] = float("nan")
    nan_model = save_checkpoint(model, tmp_path / "nan.safetensors")
    truncated_model = tmp_path / "cut.safetensors"
    truncated_model.write_bytes(nan_model.read_bytes()[:1000])
    bodies = _body_variants(tmp_path)
    (tmp_path / "a_folder").mkdir()
    infer = ["infer", str(img), "-o", str(out)]
    expect = {   # name: (argv, words the one error line must contain)
        "boxes_nan": (infer + ["--boxes", "nan,nan,nan,nan"], "--boxes"),
        "boxes_inf": (infer + ["--boxes", "0,0,inf,inf"], "--boxes"),
        "boxes_xywh": (infer + ["--boxes", "10,10,5,5"], "x2>x1"),
        "max_people_0": (infer + ["--max-people", "0"], "--max-people 0: must be 1 or more"),
        "max_people_neg": (infer + ["--max-people", "-1"], "--max-people -1"),
        "threads_neg": (infer + ["--threads", "-1"], "--threads -1: must be 1 or more"),
        "device_meta": (infer + ["--device", "meta"], "--device meta: not a device"),
        "device_junk": (infer + ["--device", "banana"], "--device 'banana'"),
        "device_cuda_index": (infer + ["--device", "cuda:97"], "--device cuda:97"),
        "body_missing": (infer + ["--body", str(tmp_path / "nope.npz")], "not found"),
        "body_folder": (infer + ["--body", str(tmp_path / "a_folder")], "a_folder"),
        "body_truncated": (infer + ["--body", str(bodies["truncated"])], "truncated.npz"),
        "body_object": (infer + ["--body", str(bodies["object"])], "pickled Python objects"),
        "body_nan": (infer + ["--body", str(bodies["nan"])], "'v_template' holds NaN"),
        "body_bomb": (infer + ["--body", str(bodies["bomb"])], "declares shape (330000000, 3)"),
        "model_nan": (infer + ["--model", str(nan_model)], "NaN or infinite weights"),
        "model_truncated": (infer + ["--model", str(truncated_model)], "cut.safetensors"),
        "model_missing": (infer + ["--model", str(tmp_path / "gone.safetensors")], "gone.safetensors"),
        "model_exploit": (infer + ["--model", str(exploit)], "numpy.testing._private.utils.runstring"),
        "convert_exploit": (["convert-checkpoint", str(exploit), str(tmp_path / "x.safetensors")], "runstring"),
        "formats_bad": (infer + ["--formats", "npz,stl"], "--formats"),
        "min_person_0": (infer + ["--min-person", "0"], "--min-person 0"),
        "det_threshold_2": (infer + ["--det-threshold", "2"], "--det-threshold 2"),
        "output_is_a_file": (["infer", str(img), "-o", str(img)], "choose another -o"),
    }
    report = _run_driver([{"name": k, "argv": v[0]} for k, v in expect.items()], tmp_path)
    for name, (_, words) in expect.items():
        r = report[name]
        assert r["exception"] is None, (name, r["exception"])
        lines = _lines(r["stderr"])
        assert r["code"] == 2 and len(lines) == 1, (name, r["code"], lines)
        assert lines[0].startswith("deforhmr: error:") and words in lines[0], (name, lines)
        assert "Traceback" not in r["stderr"] and "weights_only" not in r["stderr"], name
    assert not marker.exists(), "a hostile model file ran code"
    assert not (tmp_path / "x.safetensors").exists()
    assert not out.exists() or not any(out.iterdir())


def test_batch_goes_on_past_bad_images_and_leaves_no_file_of_a_failed_one(photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = photos / "coco" / "000000000785.jpg"                          # 640x425, one skier
    for name, shape in (("a_1x1.png", (1, 1)), ("b_1000x1.png", (1, 1000)), ("c_20000x2.png", (2, 20000)),
                        ("d_8x8.png", (8, 8))):
        Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(src / name)
    (src / "e_empty.jpg").write_bytes(b"")
    (src / "f_truncated.jpg").write_bytes(good.read_bytes()[:3000])
    (src / "g_notes.txt").write_text("not an image")
    (src / "h_fulldisk.jpg").write_bytes(good.read_bytes())
    (src / "z_good.jpg").write_bytes(good.read_bytes())
    (src / "z_good_overlay.png").write_bytes((src / "a_1x1.png").read_bytes())  # an earlier output
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("z_good_person1.obj", "z_good_person2.obj", "z_good.glb", "h_fulldisk.npz"):
        (out / stale).write_text("from an earlier run")
    (out / "notes_of_mine.txt").write_text("keep me")
    boxes_in = tmp_path / "boxes"
    boxes_in.mkdir()
    Image.fromarray(np.full((80, 100, 3), 90, np.uint8)).save(boxes_in / "small.png")
    (boxes_in / "photo.jpg").write_bytes(good.read_bytes())
    cases = [
        {"name": "batch", "enospc_stem": "h_fulldisk",
         "argv": ["infer", str(src), str(src / "g_notes.txt"), "-o", str(out), "--min-person", "0.4",
                  "--formats", "npz,obj,glb"]},
        {"name": "boxes", "argv": ["infer", str(boxes_in / "small.png"), str(boxes_in / "photo.jpg"), "-o",
                                   str(tmp_path / "out_boxes"), "--formats", "npz",
                                   "--boxes", "250,20,900,420"]},
    ]
    report = _run_driver(cases, tmp_path)

    r = report["batch"]
    assert r["exception"] is None, r["exception"]
    lines = _lines(r["stderr"])
    assert r["code"] == 0 and "Traceback" not in r["stderr"], lines
    for name, words in (("a_1x1.png", "too small"), ("b_1000x1.png", "too small"), ("c_20000x2.png", "too small"),
                        ("d_8x8.png", "use a larger photo"), ("e_empty.jpg", ""), ("f_truncated.jpg", ""),
                        ("g_notes.txt", ""), ("h_fulldisk.jpg", "No space left on device")):
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1 and words in hits[0], (name, lines)
    assert not any("z_good_overlay" in ln for ln in lines)         # the product's output is no photo
    assert "z_good.jpg: 1 person" in r["stdout"]
    assert "1 image(s) written" in lines[-1] and "8 failed" in lines[-1], lines[-1]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["h_fulldisk.npz", "notes_of_mine.txt", "z_good.json", "z_good.npz", "z_good_person0.obj"] \
        or names == ["h_fulldisk.npz", "notes_of_mine.txt", "z_good.glb", "z_good.json", "z_good.npz",
                     "z_good_person0.obj"], names
    assert (out / "h_fulldisk.npz").read_text() == "from an earlier run"   # the failed image added nothing
    assert (out / "z_good.glb").stat().st_size > 1000                      # the stale glb was replaced
    with zipfile.ZipFile(out / "z_good.npz") as z:
        assert "vertices.npy" in z.namelist()

    r = report["boxes"]
    assert r["exception"] is None, r["exception"]
    lines = _lines(r["stderr"])
    small = [ln for ln in lines if "small.png" in ln]
    assert len(small) == 1 and "box 1 (250, 20, 900, 420) lies outside the 100x80 px image" in small[0], lines
    assert r["code"] == 0 and "1 image(s) written" in lines[-1], lines
    from deforhmr_model.files.result import load_result
    res = load_result(tmp_path / "out_boxes" / "photo.npz")
    np.testing.assert_allclose(res.people[0].bbox, [250, 20, 640, 420])    # clipped to the 640 px width
    assert sorted(p.name for p in (tmp_path / "out_boxes").iterdir()) == ["photo.json", "photo.npz"]


def test_npz_readers_refuse_bombs_within_a_1gb_address_space(tmp_path):
    """The library's npz readers (body file, result file) alone, without torch, under RLIMIT_AS 1 GB
    (the Blender reader's own check: test_blender_addon.py)."""
    bomb = _body_variants(tmp_path)["bomb"]
    script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1024 * 2**20, 1024 * 2**20))
sys.path.insert(0, {str(REPO)!r})
from deforhmr_model.body.smpl_io import SMPLFileError, read_body_arrays
from deforhmr_model.files.npz import NpzReadError, read_npz
try:
    read_body_arrays(sys.argv[1])
except SMPLFileError as e:
    print("body:", e)
try:
    read_npz(sys.argv[1])
except NpzReadError as e:
    print("npz:", e)
print("small:", sorted(read_npz(sys.argv[1], ["f", "no_such_key"])))
from deforhmr_model.files.result import ResultFileError, load_result
try:
    load_result(sys.argv[1])
except ResultFileError as e:
    print("result:", e)
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "body: " in proc.stdout and "'v_template' declares shape (330000000, 3) float32" in proc.stdout
    assert "npz: " in proc.stdout and "small: ['f']" in proc.stdout
    assert "result: " in proc.stdout and "refused before reading it" in proc.stdout.split("result: ")[1]


def test_npz_reader_checks_headers_against_the_zip(tmp_path):
    from deforhmr_model.files.npz import NpzReadError, ObjectEntry, read_npz
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array("text"),
              "o": np.array([{"x": 1}], dtype=object)}
    np.savez(tmp_path / "ok.npz", **arrays)
    got = read_npz(tmp_path / "ok.npz")
    np.testing.assert_array_equal(got["a"], arrays["a"])
    assert str(got["s"]) == "text" and isinstance(got["o"], ObjectEntry)
    assert list(read_npz(tmp_path / "ok.npz", ["a"])) == ["a"]
    with pytest.raises(NpzReadError, match="limit"):
        read_npz(tmp_path / "ok.npz", max_entry_bytes=16)
    with pytest.raises(NpzReadError, match="in all"):
        read_npz(tmp_path / "ok.npz", max_total_bytes=16)
    raw = (tmp_path / "ok.npz").read_bytes()                 # a header that lies about the zip size
    lying = raw.replace(b"'shape': (2, 3)", b"'shape': (2, 4)")
    assert lying != raw
    (tmp_path / "lying.npz").write_bytes(lying)
    with pytest.raises(NpzReadError):
        read_npz(tmp_path / "lying.npz", ["a"])
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(NpzReadError, match="not a readable .npz"):
        read_npz(tmp_path / "cut.npz")


def test_output_set_is_all_or_nothing(tmp_path):
    import errno
    from deforhmr_model.files.output_set import stem_outputs, write_output_set
    (tmp_path / "p.npz").write_text("old")
    (tmp_path / "p_person3.obj").write_text("old")
    (tmp_path / "p_1.npz").write_text("another stem")

    def failing(folder):
        (folder / "p.npz").write_text("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        write_output_set(tmp_path, "p", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz", "p_1.npz", "p_person3.obj"]
    assert (tmp_path / "p.npz").read_text() == "old"

    def writer(folder):
        for n in ("p.npz", "p.json", "p_person0.obj"):
            (folder / n).write_text("new")
        return [folder / n for n in ("p.npz", "p.json", "p_person0.obj")]
    written = write_output_set(tmp_path, "p", writer)
    assert [p.name for p in written] == ["p.npz", "p.json", "p_person0.obj"]
    assert [p.name for p in stem_outputs(tmp_path, "p")] == ["p.json", "p.npz", "p_person0.obj"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.npz", "p_1.npz", "p_person0.obj"]


def test_non_finite_network_output_is_an_error_for_that_person_only(photos, caplog):
    from deforhmr_model.fitting.fit import FitInit
    from deforhmr_model.network.model import build_model
    from deforhmr_model.pipeline import HMRPipeline
    from deforhmr_model.stages import Person, drop_non_finite
    people = [Person(np.array([0, 0, 10, 10], np.float32), 0.9, np.zeros((17, 3), np.float32)) for _ in range(3)]
    init = FitInit(torch.eye(3).repeat(3, 1, 1), torch.eye(3).repeat(3, 23, 1, 1), torch.zeros(3, 10),
                   torch.tensor([[0, 0, 5.0], [0, float("nan"), 5.0], [0, 0, 6.0]]))
    kept, kept_init = drop_non_finite(people, init)
    assert len(kept) == 2 and kept[0] is people[0] and kept[1] is people[2]
    assert kept_init.transl[:, 2].tolist() == [5.0, 6.0]
    assert "NaN/inf for 1 of 3 person(s)" in caplog.text

    torch.manual_seed(0)                        # a model whose weights are NaN, given as an object
    model = build_model("def-m", "vit-tiny", depth=1, dim=32, mlp_dim=32)
    with torch.no_grad():
        model.smpl_head.deccam.bias.fill_(float("nan"))
    image = np.asarray(Image.open(photos / "coco" / "000000000785.jpg").convert("RGB"))
    pipe = HMRPipeline(model=model)
    det = Person(np.array([200, 50, 400, 400], np.float32), 0.9, np.zeros((17, 3), np.float32))
    result = pipe.recover([image], [[det]])[0]
    assert result.people == [] and "NaN/inf for 1 of 1 person(s)" in caplog.text


def test_two_runs_writing_one_stem_leave_one_complete_set(tmp_path, monkeypatch):
    """Concurrent writers of the same stem (threads here; the lock is on the folder, so processes
    behave the same): the folder ends with exactly one writer's set, never a mix. Renames are
    slowed down to widen the race (without the lock about 3 in 10 rounds end mixed)."""
    import threading
    import time
    from deforhmr_model.files.output_set import stem_outputs, write_output_set
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (time.sleep(0.005), real_replace(a, b))[1])
    sets = {"four": ["p.npz", "p.json"] + [f"p_person{k}.obj" for k in range(4)], "one": ["p.npz", "p_person0.obj"]}

    def writer(tag):
        def write(folder):
            paths = []
            for n in sets[tag]:
                (folder / n).write_text(tag)
                paths.append(folder / n)
            return paths
        return write
    for _ in range(12):
        threads = [threading.Thread(target=write_output_set, args=(tmp_path, "p", writer(t))) for t in sets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        names = [p.name for p in stem_outputs(tmp_path, "p")]
        tags = {p.read_text() for p in stem_outputs(tmp_path, "p")}
        assert len(tags) == 1 and sorted(names) == sorted(sets[tags.pop()]), names
