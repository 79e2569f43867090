"""Installs as users install: a built wheel (non-editable) carries the shipped model files.

The wheel is built from a copy of the working tree (never a stale ``build/``), installed with
``--no-deps`` into a fresh virtual environment that sees this environment's packages through a
``.pth`` file (so no download, and no editable ``deforhmr_model`` on the path), and its
``deforhmr`` command runs the main job on a real photo from a folder outside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SKIP_COPY = shutil.ignore_patterns(".git", ".venv", ".venv-blender", "node_modules", "build", "dist", "out",
                                    "*.egg-info", "__pycache__", ".pytest_cache", ".tmp")


def _venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def build_wheel(tmp: Path) -> Path:
    """Build the project's wheel from a clean copy of the tree; returns the .whl path."""
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_SKIP_COPY, symlinks=False)
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist"],
         env=_clean_env())
    (wheel,) = (tmp / "dist").glob("deforhmr-*.whl")
    return wheel


def test_wheel_install_ships_model_files_and_runs_the_main_job(tmp_path, photos):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = _venv_bin(venv, "python")
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # This environment's packages (torch, smplx, litert, pip, ...) after the venv's own; its
    # editable-install hook is a .pth inside that folder, which a .pth-added folder never runs.
    (site / "_deforhmr_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], env=_clean_env())

    work = tmp_path / "work"
    work.mkdir()
    where = _run([py, "-c", "import deforhmr_model.files.weights as w; print(w.SHIPPED_WEIGHTS)"],
                 cwd=work, env=_clean_env()).stdout.strip()
    assert Path(where).is_relative_to(site), f"deforhmr_model imported from {where}, not the installed wheel"
    manifest = json.loads((Path(where) / "manifest.json").read_text())
    shipped = [e["name"] for e in manifest["files"] if e.get("shipped")]
    assert {"pose_detection.tflite", "pose_landmark_full.tflite", "open_body.npz"} <= set(shipped)
    assert all((Path(where) / n).is_file() for n in shipped), "a shipped model file is missing from the wheel"

    photo = photos / "coco" / "000000000785.jpg"
    run = _run([_venv_bin(venv, "deforhmr"), "infer", photo, "-o", work / "out", "--formats", "npz,glb"],
               cwd=work, env=_clean_env())
    result = json.loads((work / "out" / (photo.stem + ".json")).read_text())
    assert result["people"], f"no person found on {photo.name}:\n{run.stdout}\n{run.stderr}"
    assert (work / "out" / (photo.stem + ".glb")).stat().st_size > 100_000
