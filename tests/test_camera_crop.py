"""Camera conversions and HMR 2.0 crops (hmr2_reference.md §3-4)."""
from __future__ import annotations

import numpy as np
import torch

from deforhmr_model.geometry.camera import (cam_crop_to_full, cam_full_to_crop, hmr2_focal_length,
                                   perspective_projection)
from deforhmr_model.people.crop import CROP_WIDTH, IMAGE_MEAN, IMAGE_STD, box_to_center_size, crop_person


def test_focal_length_rule():
    assert hmr2_focal_length(640, 480) == 5000 / 256 * 640


def test_crop_camera_round_trip_and_projection_consistency():
    cam = torch.tensor([[0.9, 0.05, -0.1], [1.3, -0.2, 0.3]])
    center = torch.tensor([[300.0, 200.0], [50.0, 400.0]])
    size = torch.tensor([220.0, 90.0])
    img = torch.tensor([[640.0, 480.0], [640.0, 480.0]])
    f = hmr2_focal_length(640, 480)
    t = cam_crop_to_full(cam, center, size, img, f)
    assert torch.allclose(cam_full_to_crop(t, center, size, img, f), cam, atol=1e-5)
    # A point at the body origin projects to the crop-camera's prediction mapped to the photo:
    # crop normalised (tx*s..)-> the origin lands at centre + (s*tx... ) per HMR 2.0's weak perspective
    uv = perspective_projection(torch.zeros(2, 1, 3), f, img / 2, transl=t)[:, 0]
    expected = center + size[:, None] * cam[:, 1:] * cam[:, :1] / 2
    assert torch.allclose(uv, expected, atol=1e-3)


def test_crop_rule_and_normalisation():
    image = np.zeros((400, 600, 3), np.uint8)
    image[100:300, 250:350] = 255
    c, s = box_to_center_size(np.array([250, 100, 350, 300]))
    assert np.allclose(c, [300, 200]) and s == 200  # h/w = 2 > 4/3: height kept
    c, s = box_to_center_size(np.array([0, 0, 300, 100]))
    assert s == 400  # wide box: height raised to w * 4/3
    crop = crop_person(image, np.array([250, 100, 350, 300]))
    assert crop.image.shape == (3, 256, CROP_WIDTH) and crop.image.dtype == torch.float32
    white = (1 - np.array(IMAGE_MEAN)) / np.array(IMAGE_STD)
    # the white box fills rows 0..255 and the central 128 columns of the 192-wide crop
    assert np.allclose(crop.image[:, 128, 96].numpy(), white, atol=1e-5)
    assert crop.image[:, 128, 2].max() < 0  # black border left of the box
    assert np.allclose(crop.affine @ np.array([300, 200, 1]), [128, 128])
