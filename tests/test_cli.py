"""The `deforhmr infer` command: outputs on a real photo and bad-input handling."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deforhmr_model.cli import main


def _run(capsys, *args):
    code = main(["infer", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _no_partial_files(folder):
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, f"temporary/partial files left behind: {leftovers}"


def test_infer_writes_every_output(photos, tmp_path, capsys):
    code, out, err = _run(capsys, photos / "coco" / "000000000785.jpg", "-o", tmp_path)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    for n in ("000000000785.npz", "000000000785.json", "000000000785.glb", "000000000785_overlay.png",
              "000000000785_person0.obj"):
        assert n in names, names
    overlay = np.asarray(Image.open(tmp_path / "000000000785_overlay.png"))
    photo = np.asarray(Image.open(photos / "coco" / "000000000785.jpg").convert("RGB"))
    assert overlay.shape == photo.shape and (overlay != photo).any()
    _no_partial_files(tmp_path)


def test_bad_inputs_each_get_one_line_and_a_summary(photos, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    good = (photos / "coco" / "000000000785.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.full((120, 160, 3), 127, np.uint8)).save(src / "grey.png")  # no person
    out = tmp_path / "out"
    code, _, err = _run(capsys, src, "-o", out)
    assert code == 1  # nothing produced
    lines = err.strip().splitlines()
    for name in ("empty.jpg", "truncated.jpg", "grey.png"):
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1, (name, lines)
    assert not any("notes.txt" in ln for ln in lines)          # folders take image files only
    assert sum("ignoring 1 file(s) that are not photos" in ln for ln in lines) == 1
    assert "Traceback" not in err
    assert "0 image(s) written" in lines[-1]
    assert not list(out.iterdir())

    (src / "person.jpg").write_bytes(good)  # mixed folder: one good image -> success
    code, _, err = _run(capsys, src, "-o", out)
    assert code == 0
    assert "1 image(s) written" in err.strip().splitlines()[-1]
    assert sorted(p.suffix for p in out.iterdir()).count(".npz") == 1
    _no_partial_files(out)


def test_unwritable_output_and_missing_input(tmp_path, capsys, photos):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, photos / "skates.png", "-o", blocker / "sub")
    assert code == 2 and "cannot write to output folder" in err and "Traceback" not in err
    code, _, err = _run(capsys, tmp_path / "missing.jpg", "-o", tmp_path / "o")
    assert code == 1 and "missing.jpg" in err


def test_usage_errors(tmp_path, capsys, photos):
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--formats", "fbx")
    assert code == 2 and "fbx" in err
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--boxes", "1,2,3")
    assert code == 2 and "--boxes" in err
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--model", "no-such-model")
    assert code == 2 and "no-such-model" in err and "searched" in err
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--focal", "-3")
    assert code == 2 and "--focal" in err
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--fov", "200")
    assert code == 2 and "--fov" in err


def test_user_boxes_bypass_detection(photos, tmp_path, capsys):
    code, _, err = _run(capsys, photos / "coco" / "000000000785.jpg", "-o", tmp_path,
                        "--boxes", "280,44,500,392", "--formats", "npz")
    assert code == 0, err
    from deforhmr_model.files.result import load_result
    r = load_result(tmp_path / "000000000785.npz")
    assert len(r.people) == 1 and 0.0 < r.people[0].score <= 1.0
    np.testing.assert_allclose(r.people[0].bbox, [280, 44, 500, 392])
    assert r.focal_source == "standard:30mm"  # no EXIF in the COCO photo
    # the camera can be given: the focal length (px) is used and recorded with its source
    code, _, err = _run(capsys, photos / "coco" / "000000000785.jpg", "-o", tmp_path / "f",
                        "--boxes", "280,44,500,392", "--formats", "npz", "--focal", "1234.5")
    assert code == 0, err
    r2 = load_result(tmp_path / "f" / "000000000785.npz")
    assert r2.focal_length == 1234.5 and r2.focal_source == "user:focal"
    assert r2.people[0].transl[2] > r.people[0].transl[2]  # a longer lens puts the person further away


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "deforhmr_model.cli", "infer", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--refine" in out.stdout


def test_convert_checkpoint_command(tmp_path, capsys):
    import torch

    from deforhmr_model.network.checkpoint import load_model, save_checkpoint
    from deforhmr_model.network.model import build_model
    src = save_checkpoint(build_model("reg-s", "vit-tiny", depth=1, dim=32, mlp_dim=32), tmp_path / "a.safetensors")
    assert main(["convert-checkpoint", str(src), str(tmp_path / "b.safetensors"), "--dtype", "bfloat16"]) == 0
    m = load_model(tmp_path / "b.safetensors")
    assert m.config.variant == "reg-s"
    assert next(iter(load_model(tmp_path / "b.safetensors", dtype=torch.bfloat16).parameters())).dtype == torch.bfloat16
    assert main(["convert-checkpoint", str(tmp_path / "missing.ckpt"), str(tmp_path / "c.safetensors")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err


def test_unavailable_device_is_a_usage_error(tmp_path, capsys, photos):
    import torch
    # cuda:99 is unavailable on every machine: no CUDA at all, or fewer GPUs
    why = "CUDA GPU(s)" if torch.cuda.is_available() else "CUDA is not available"
    code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--device", "cuda:99")
    assert code == 2 and why in err and "Traceback" not in err
    for bad in ("gpu0", "meta"):
        code, _, err = _run(capsys, photos / "skates.png", "-o", tmp_path, "--device", bad)
        assert code == 2 and "--device" in err and bad in err and "Traceback" not in err


def test_convert_smpl_command_then_infer_with_it(tmp_path, capsys, photos):
    """`deforhmr convert-smpl` on a chumpy-style pickle (no chumpy installed), then the
    converted body drives `deforhmr infer --body`."""
    from deforhmr_model.files.result import load_result

    from .test_smpl_io import write_chumpy_smpl_pkl
    pkl = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    write_chumpy_smpl_pkl(pkl)
    npz = tmp_path / "SMPL_TEST.npz"
    assert main(["convert-smpl", str(pkl), str(npz)]) == 0 and npz.is_file()
    code, _, err = _run(capsys, photos / "coco" / "000000000785.jpg", "-o", tmp_path / "o", "--body", npz,
                        "--formats", "npz")
    assert code == 0, err
    r = load_result(tmp_path / "o" / "000000000785.npz")
    assert r.people and r.lbs_weights.shape[0] != 12272  # the converted body, not the open body


def test_detector_option(photos, tmp_path, capsys, monkeypatch):
    """--detector reaches the pipeline's front door; both shipped detectors find the person."""
    from deforhmr_model import stages
    names = []
    real = stages.make_detector
    monkeypatch.setattr(stages, "make_detector", lambda name, **kw: names.append(name) or real(name, **kw))
    for det in ("blazepose", "movenet"):
        code, _, err = _run(capsys, photos / "coco" / "000000000785.jpg", "-o", tmp_path / det,
                            "--detector", det, "--formats", "npz")
        assert code == 0, err
        from deforhmr_model.files.result import load_result
        assert len(load_result(tmp_path / det / "000000000785.npz").people) == 1
    assert names == ["blazepose", "movenet"]
    with pytest.raises(SystemExit) as e:                      # argparse: one usage line naming the choices
        _run(capsys, photos / "skates.png", "-o", tmp_path, "--detector", "yolo")
    assert e.value.code == 2 and "movenet" in capsys.readouterr().err


def test_overlay_format_and_max_side(photos, tmp_path, capsys):
    """Huge photos: a JPEG overlay scaled to a max side; a later PNG run replaces it (same output
    set), and a folder input never takes an overlay for a photo."""
    photo = photos / "coco" / "000000000785.jpg"
    code, _, err = _run(capsys, photo, "-o", tmp_path, "--formats", "npz,overlay", "--overlay-format", "jpg",
                        "--overlay-max-side", "320")
    assert code == 0, err
    jpg = tmp_path / "000000000785_overlay.jpg"
    with Image.open(jpg) as im:
        w, h = Image.open(photo).size
        assert im.format == "JPEG" and max(im.size) == 320 and abs(im.size[0] / im.size[1] - w / h) < 0.01
    code, _, err = _run(capsys, photo, "-o", tmp_path, "--formats", "npz,overlay")
    assert code == 0, err
    assert not jpg.exists() and (tmp_path / "000000000785_overlay.png").is_file()  # today's default
    code, _, err = _run(capsys, photo, "-o", tmp_path, "--formats", "npz", "--overlay-max-side", "-1")
    assert code != 0 and "--overlay-max-side" in err and "Traceback" not in err
    from deforhmr_model.files.output_set import is_output_name
    assert is_output_name("a_overlay.jpg") and is_output_name("a_overlay.png") and not is_output_name("a.jpg")
    _no_partial_files(tmp_path)
