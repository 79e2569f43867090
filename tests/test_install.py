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


# ----------------------------------------------------------------------------- requirements.txt

def _requirements() -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    return [ln for ln in lines if ln]


def test_requirements_txt_is_pyproject_dependencies_without_torch():
    import tomllib

    from packaging.requirements import Requirement
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    want = sorted(str(Requirement(d)) for d in deps if Requirement(d).name != "torch")
    got = sorted(str(Requirement(r)) for r in _requirements())
    assert got == want, "requirements.txt and pyproject.toml's dependencies (minus torch) differ"
    assert "torch" not in {Requirement(r).name for r in got}


def test_every_requirement_has_its_import_name():
    from nodes import deps
    names = deps.requirement_names()
    assert names == [r.split("=")[0].split(">")[0].split("<")[0].lower() for r in _requirements()]
    assert set(names) == set(deps.IMPORT_NAMES), "nodes/deps.py IMPORT_NAMES must list every requirement"
    assert deps.missing() == ()  # this environment has them all


_MISSING_SMPLX = """
import importlib.util, json, logging, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "smplx":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
records = []
class Keep(logging.Handler):
    def emit(self, record): records.append(record.getMessage())
logging.getLogger().addHandler(Keep()); logging.getLogger().setLevel(logging.INFO)
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("ComfyUI_DeforHMR", root + "/__init__.py",
                                              submodule_search_locations=[root])
m = importlib.util.module_from_spec(spec); sys.modules["ComfyUI_DeforHMR"] = m; spec.loader.exec_module(m)
errors = []
for node_id, cls in sorted(m.NODE_CLASS_MAPPINGS.items()):
    try:
        getattr(cls(), cls.FUNCTION)()
    except Exception as e:
        errors.append([node_id, type(e).__name__, str(e)])
print(json.dumps({"log": [r for r in records if "smplx" in r], "errors": errors, "nodes": len(m.NODE_CLASS_MAPPINGS)}))
"""


def test_a_missing_requirement_is_named_once_with_the_pip_command():
    out = subprocess.run([sys.executable, "-c", _MISSING_SMPLX, str(REPO)], capture_output=True, text=True,
                         cwd=str(REPO.parent), timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    command = f'"{sys.executable}" -m pip install -r "{REPO / "requirements.txt"}"'
    assert len(r["log"]) == 1 and "smplx" in r["log"][0] and command in r["log"][0], r["log"]
    assert len(r["errors"]) == r["nodes"] >= 8
    for node_id, kind, msg in r["errors"]:  # every node: the same one line, before any argument is used
        assert kind == "MissingRequirementsError" and msg == r["log"][0] and "\n" not in msg, (node_id, msg)


# ----------------------------------------------------------------------------- Windows / macOS wheels

# (pip --platform tag, marker environment) for the platforms ComfyUI and Blender users run:
# the Windows portable build (x64) and Apple silicon, Python 3.12 and 3.13.
_PLATFORMS = {
    "win_amd64": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt",
                  "platform_machine": "AMD64"},
    "macosx_14_0_arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
                          "platform_machine": "arm64"},
}
_PYTHONS = ("3.12", "3.13")
_UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Could not fetch URL", "Temporary failure in name "
                "resolution", "Network is unreachable", "ConnectTimeout", "Connection refused", "ProxyError")


def _dry_run(reqs: list[str], platform: str, python: str, report: Path, deps: bool) -> list[dict]:
    """pip's resolution of ``reqs`` (with or without their dependencies) for one platform, binary
    wheels only; pip fetches each chosen wheel (the index has no separate metadata) but installs nothing."""
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           *([] if deps else ["--no-deps"]), "--only-binary", ":all:", "--platform", platform,
           "--python-version", python, "--implementation", "cp", "--abi", abi, "--retries", "1", "--timeout", "60",
           "--target", str(report.with_suffix(".target")), "--report", str(report), *reqs]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_clean_env())
    if out.returncode != 0:
        text = out.stdout + out.stderr
        if any(s in text for s in _UNREACHABLE):
            raise AssertionError(
                f"the package index is unreachable, so the Windows/macOS wheel check cannot run (it must not be "
                f"skipped): pip needs the index it is configured for (`pip config list`, PIP_INDEX_URL). pip said:\n"
                f"{text[-1500:]}")
        raise AssertionError(f"pip found no binary wheel for {platform} / Python {python} for one of {reqs}:\n"
                             f"{text[-2500:]}")
    return json.loads(report.read_text())["install"]


def _wheel_closure(platform: str, python: str, tmp: Path) -> dict[str, str]:
    """{distribution: wheel file} for requirements.txt and everything it depends on on one platform,
    except torch (ComfyUI users bring their own; smplx and roma ask for it); fails naming a
    package without a wheel there. Two pip runs: requirements.txt without dependencies, then
    their dependencies (torch left out) resolved with all of theirs."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    env = {**default_environment(), **_PLATFORMS[platform], "python_version": python,
           "python_full_version": python + ".0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}
    direct = _dry_run(_requirements(), platform, python, tmp / f"{platform}-{python}-1.json", deps=False)
    seen = {canonicalize_name(item["metadata"]["name"]) for item in direct} | {"torch"}
    indirect = []
    for item in direct:
        for dep in item["metadata"].get("requires_dist") or []:
            req = Requirement(dep)
            name = canonicalize_name(req.name)
            if name in seen or (req.marker is not None and not req.marker.evaluate(env)):
                continue
            seen.add(name)
            req.marker = None
            indirect.append(str(req))
    installs = direct + (_dry_run(indirect, platform, python, tmp / f"{platform}-{python}-2.json", deps=True)
                         if indirect else [])
    return {canonicalize_name(i["metadata"]["name"]): i["download_info"]["url"].rsplit("/", 1)[-1] for i in installs}


def test_requirements_have_wheels_for_windows_and_macos(tmp_path):
    """Every package of requirements.txt, and every package those depend on, has a binary wheel for
    Windows x64 and macOS arm64 on CPython 3.12 and 3.13 (resolved against the package index)."""
    from concurrent.futures import ThreadPoolExecutor

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    combos = [(p, v) for p in _PLATFORMS for v in _PYTHONS]
    with ThreadPoolExecutor(len(combos)) as pool:
        found = dict(zip(combos, pool.map(lambda c: _wheel_closure(*c, tmp_path), combos)))
    for (platform, python), wheels in found.items():
        names = {canonicalize_name(Requirement(r).name) for r in _requirements()}
        assert names <= set(wheels), (platform, python, names - set(wheels))
        tag = "cp" + python.replace(".", "")
        for name, wheel in wheels.items():  # the wheel really is for that platform (or pure Python)
            assert wheel.endswith(".whl"), (platform, python, name, wheel)
            assert (wheel.endswith("-none-any.whl") or platform.split("_")[0] in wheel
                    and (tag in wheel or "abi3" in wheel or "-py3-" in wheel)), (platform, python, name, wheel)
        assert {"numpy", "ai-edge-litert", "opencv-python-headless", "scipy", "protobuf"} <= set(wheels)
        assert "torch" not in wheels, f"a dependency other than smplx/roma pulls torch on {platform}"


def test_readme_commands_are_what_ci_runs():
    """README.md's setup and test commands and its ComfyUI install command are lines of .ci/run."""
    import re
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    comfy = readme[readme.index("## ComfyUI"):]
    assert "ComfyUI-Manager" in comfy and "custom_nodes" in comfy
    comfy_cmd = re.search(r"```bash\n(.*?)\n```", comfy, flags=re.S).group(1)
    assert comfy_cmd == "python -m pip install -r requirements.txt"
    for block in [*blocks[:2], comfy_cmd]:  # "The two commands", then "ComfyUI"
        for line in block.splitlines():
            assert any(c.strip() == line.strip() for c in ci), f"README command not run by .ci/run: {line}"
