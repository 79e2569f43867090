"""The photo's camera: EXIF focal length, the standard lens, user overrides, shared depths,
the ground plane (issue 11 part 2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from deforhmr_model.files.image_io import ExifFocal, read_exif_focal
from deforhmr_model.geometry.camera import (STANDARD_FOCAL_35MM, choose_camera, focal_from_fov,
                                            focal_to_35mm, standard_focal_length)
from deforhmr_model.geometry.ground import estimate_ground_plane


def _jpeg_with_exif(path, size=(300, 200), **tags):
    """A real JPEG written by PIL with the given EXIF sub-IFD tags (tag id -> value)."""
    im = Image.new("RGB", size, (120, 130, 140))
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"  # Make, in IFD0
    sub = exif.get_ifd(0x8769)
    for tag, value in tags.items():
        sub[int(tag, 16)] = value
    im.save(path, exif=exif)
    return path


def test_exif_35mm_focal_is_read_and_converted(tmp_path):
    p = _jpeg_with_exif(tmp_path / "phone.jpg", size=(4000, 3000), **{"0xA405": 26, "0x920A": 4.25})
    info = read_exif_focal(p)
    assert info.focal_35mm == 26 and info.focal_mm == pytest.approx(4.25)
    cam = choose_camera(4000, 3000, exif=info)
    assert cam.source == "exif:FocalLengthIn35mmFilm"
    assert cam.focal_length == pytest.approx(26 / 43.2666 * 5000, rel=1e-4)
    assert cam.focal_35mm == pytest.approx(26, rel=1e-6)
    # the same photo downsized keeps its field of view
    assert choose_camera(1000, 750, exif=info).fov_degrees == pytest.approx(cam.fov_degrees)


def test_exif_focal_with_sensor_pitch_rescaled_to_the_image(tmp_path):
    # 50 mm lens, 4000 px over a 36 mm sensor (FocalPlaneXResolution in px per inch), image since halved
    ppi = 4000 / 36 * 25.4
    p = _jpeg_with_exif(tmp_path / "dslr.jpg", size=(2000, 1333),
                        **{"0x920A": 50.0, "0xA20E": ppi, "0xA210": 2, "0xA002": 4000, "0xA003": 2667})
    cam = choose_camera(2000, 1333, exif=read_exif_focal(p))
    assert cam.source == "exif:FocalLength+FocalPlaneXResolution"
    assert cam.focal_length == pytest.approx(50 * 4000 / 36 / 2, rel=1e-3)


def test_no_exif_or_nonsense_exif_falls_back_to_the_standard_lens(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 48)).save(plain)
    assert read_exif_focal(plain) is None and read_exif_focal(np.zeros((4, 4, 3))) is None
    cam = choose_camera(1920, 1080, exif=read_exif_focal(plain))
    assert cam.source == "standard:30mm" and cam.focal_length == pytest.approx(standard_focal_length(1920, 1080))
    assert 25 <= cam.focal_35mm <= 45 and cam.focal_35mm == pytest.approx(STANDARD_FOCAL_35MM)
    # a 0.01 mm "35 mm equivalent" (broken EXIF) is not believed
    assert choose_camera(1920, 1080, exif=ExifFocal(focal_35mm=0.01)).source == "standard:30mm"


def test_user_overrides_win_over_exif():
    exif = ExifFocal(focal_35mm=26)
    assert choose_camera(1920, 1080, focal_length=1500, exif=exif).focal_length == 1500
    cam = choose_camera(1920, 1080, fov=60, exif=exif)
    assert cam.source == "user:fov" and cam.fov_degrees == pytest.approx(60)
    assert focal_from_fov(90, 1000, 500) == pytest.approx(500)
    for bad in (dict(focal_length=0), dict(focal_length=float("nan")), dict(fov=180), dict(fov=-5)):
        with pytest.raises(ValueError):
            choose_camera(640, 480, **bad)
    assert focal_to_35mm(math.hypot(36, 24), 36, 24) == pytest.approx(math.hypot(36, 24))


def test_ground_plane_from_feet():
    rng = np.random.default_rng(0)
    # three upright people (body +Y = camera -y) standing on the floor y = 1.6 m, tilted 10 deg about x
    tilt = np.radians(10)
    Rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    R = Rx @ np.diag([1.0, -1.0, -1.0])
    up = R[:, 1]
    people = []
    for x, z in ((-1.0, 4.0), (0.5, 6.0), (1.5, 5.0)):
        base = np.array([x, 0.0, z])
        base = base - (up @ base + 1.6) * up  # on the plane up . X + 1.6 = 0
        side = rng.normal(0, 0.1, (200, 3))
        body = base + np.outer(rng.uniform(0, 1.7, 200), up) + side - np.outer(side @ up, up)
        body[0] = base  # the lowest point is the foot
        people.append(body)
    gp = estimate_ground_plane(np.stack([R] * 3), np.stack(people), np.array([0.9, 0.8, 0.9]))
    assert gp["num_people"] == 3 and gp["source"] == "feet"
    assert np.degrees(np.arccos(np.dot(gp["normal"], up))) < 2.0
    assert gp["offset"] == pytest.approx(1.6, abs=0.05)
    assert estimate_ground_plane(np.stack([R]), people[0][None], np.array([0.1])) is None  # feet unseen


def test_person_3m_from_a_phone_comes_out_2_to_4m_away(tmp_path):
    """A standing person 3 m from a 26 mm-equivalent phone camera (1920x1080, no EXIF left):
    fitted with the standard lens, they stand 2-4 m away; with the EXIF focal, ~3 m."""
    import torch

    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.fitting.fit import fit_to_keypoints
    from deforhmr_model.geometry.camera import focal_from_35mm, perspective_projection
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat

    from .body_fixtures import make_test_smpl_npz

    data = load_body_data(make_test_smpl_npz(tmp_path / "SMPL_TEST.npz"))
    W, H = 1080, 1920  # portrait phone photo
    f_true = focal_from_35mm(26, W, H)
    aa = torch.zeros(1, 24, 3)
    aa[0, 0] = torch.tensor([np.pi, 0.0, 0.0])
    aa[0, 16, 2], aa[0, 17, 2] = -1.2, 1.2
    R = axis_angle_to_rotmat(aa)
    body = BodyModel(data)
    out = body(R[:, 0], R[:, 1:], torch.zeros(1, 10), torch.tensor([[0.1, 0.3, 3.0]]))
    uv = perspective_projection(body.coco17(out), f_true, torch.tensor([W / 2, H / 2]))
    kp = torch.cat([uv, torch.ones(1, 17, 1)], -1)
    box = torch.cat([uv.min(1).values - 20, uv.max(1).values + 20], -1)
    for cam, lo, hi in ((choose_camera(W, H), 2.0, 4.0), (choose_camera(W, H, exif=ExifFocal(26.0)), 2.7, 3.3)):
        fit = fit_to_keypoints(data, kp, box, cam.focal_length, cam.principal_point)
        z = float(body(fit.global_orient, fit.body_pose, fit.betas, fit.transl).joints[0, 0, 2])  # pelvis
        assert lo <= z <= hi, (cam.source, z, float(out.joints[0, 0, 2]))


def test_two_skaters_side_by_side_stand_at_consistent_depths(photos):
    """Neighbouring skaters in skates.png (touching) share the camera and stand within 2 m in depth,
    at believable distances (not the 50-200 m of a telephoto focal length)."""
    from deforhmr_model.pipeline import HMRPipeline

    boxes = np.array([[26, 196, 216, 500], [124, 185, 327, 505]], np.float32)
    res = HMRPipeline(model="none")(photos / "skates.png", boxes)
    assert res.focal_source == "standard:30mm"
    z = [float(np.median(p.joints[:, 2])) for p in res.people]
    assert all(2.0 < d < 15.0 for d in z) and abs(z[0] - z[1]) < 2.0, z
    assert res.ground_plane is not None and res.ground_plane["normal"][1] < -0.8  # up is image-up
