"""Shared test fixtures: paths to the real photos beside the repository, seeding."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFORHMR_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "photos" / "dev"


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
