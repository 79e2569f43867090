"""Shared test fixtures (paths to the real photos beside the repository, seeding) and the
suite's one skip policy.

Skip policy: after ``tools/setup_test_deps.sh`` nothing may skip. A test that skips
(``pytest.skip``, ``skipif``, ``importorskip``; e.g. a test tool such as the glTF validator
or ``.venv-blender`` is missing) is reported as a FAILURE naming the reason, unless the
environment sets ``DEFORHMR_ALLOW_SKIPS=1`` (a machine that cannot install a tool).
Expected failures (``xfail``) are not skips.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFORHMR_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "photos" / "dev"


ALLOW_SKIPS = os.environ.get("DEFORHMR_ALLOW_SKIPS") == "1"
_POLICY = ("nothing may skip after tools/setup_test_deps.sh (set DEFORHMR_ALLOW_SKIPS=1 to allow "
           "skips on a machine without the test tools)")


def _skip_reason(report) -> str:
    lr = report.longrepr
    return str(lr[2] if isinstance(lr, tuple) and len(lr) == 3 else lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failed test (see the module docstring)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not ALLOW_SKIPS:
        report.outcome = "failed"
        report.longrepr = f"SKIPPED -> FAILED: {_skip_reason(report)}\n{_POLICY}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips as a whole (``importorskip`` at import time) fails to collect."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not ALLOW_SKIPS:
        report.outcome = "failed"
        report.longrepr = f"SKIPPED -> FAILED: {_skip_reason(report)}\n{_POLICY}"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
        torch.manual_seed(0)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def photos() -> Path:
    if not PHOTOS.is_dir():
        pytest.fail(f"real photos not found at {PHOTOS}; put the shared/ folder beside the repository "
                    "or set DEFORHMR_SHARED")
    return PHOTOS


def dev_photo_list(photos: Path) -> list[Path]:
    """Every real dev photo: COCO, MPII, skates.png and the 4016x6016 pexels photo."""
    return sorted((photos / "coco").glob("*.jpg")) + sorted((photos / "mpii").glob("*.jpg")) + [
        photos / "skates.png", photos / "pexels-anete-lusina-4793258.jpg"]


@pytest.fixture(scope="session")
def dev_results(photos):
    """The main job (no checkpoint: fit to BlazePose keypoints, open body unless SMPL is
    installed) run once on every dev photo: {Path: ImageResult}."""
    from deforhmr_model.pipeline import HMRPipeline
    pipe = HMRPipeline(model="none")
    return {p: pipe(p) for p in dev_photo_list(photos)}
