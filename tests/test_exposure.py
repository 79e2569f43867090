"""Exposure correction of dark photos before detection: normal photos untouched, a darkened
real photo and a real ExLPose night frame give their people back."""
from __future__ import annotations

import json

import numpy as np

from deforhmr_model.files.image_io import load_image
from deforhmr_model.people import exposure
from deforhmr_model.people.blazepose import box_iou
from deforhmr_model.people.detection import make_detector
from tests.conftest import PHOTOS as DEV

PEXELS = DEV / "pexels-anete-lusina-4793258.jpg"


def _darken(image: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    """A night shot of the same scene: scaled down, with sensor noise and 8-bit rounding."""
    rng = np.random.default_rng(seed)
    dark = image.astype(np.float32) * scale + rng.normal(0.0, 0.8, image.shape)
    return np.clip(np.round(dark), 0, 255).astype(np.uint8)


def test_normal_photos_are_returned_unchanged():
    for path in (PEXELS, DEV / "skates.png", *sorted((DEV / "coco").glob("*.jpg"))):
        image = load_image(path)
        assert not exposure.is_dark(image), path.name
        assert exposure.correct_exposure(image) is image


def test_dark_photo_is_brightened_same_shape():
    image = _darken(load_image(PEXELS), 0.05)
    assert exposure.is_dark(image)
    out = exposure.correct_exposure(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert exposure.luminance_p99(out) > 4 * exposure.luminance_p99(image)
    assert exposure.luminance_p99(out) > exposure.DARK_P99         # corrected once, not again


def test_noise_blur_grows_with_gain():
    assert exposure.noise_sigma(1.0) == 0.0 and exposure.noise_sigma(2.0) == 0.0
    assert 0 < exposure.noise_sigma(8.0) < exposure.noise_sigma(30.0) <= 2.5


def test_person_found_in_darkened_real_photo():
    image = load_image(PEXELS)
    det = make_detector("movenet")
    ref = det.detect(image)[0].bbox
    people = det.detect(_darken(image, 0.015))         # 99th percentile ~4 of 255, as the ExLPose frames
    assert people, "no one found in the darkened photo"
    assert box_iou(ref[None].astype(float), np.stack([p.bbox for p in people]).astype(float)).max() >= 0.5


def test_person_found_in_real_night_frame():
    ann = json.loads((DEV / "exlpose" / "test_exlpose.json").read_text())
    im = next(i for i in ann["images"] if "exposure_1250" in i["file_name"])
    image = load_image(DEV / "exlpose" / im["file_name"])
    assert exposure.luminance_p99(image) < 10                       # really dark: max pixel value < 20
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in ann["annotations"] if a["image_id"] == im["id"]], float)
    people = make_detector("movenet").detect(image)
    assert people, "no one found in the night frame"
    assert box_iou(np.stack([p.bbox for p in people]).astype(float), boxes).max() >= 0.5
