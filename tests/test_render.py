"""Software overlay renderer: analytic depth of a sphere, silhouettes and depth of posed bodies,
nearest-person-wins, the capped-resolution path, empty results and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from deforhmr_model.files.render import (RenderError, intrinsics, person_colors, render_meshes,
                                   render_overlay, render_side_view)
from deforhmr_model.files.result import ImageResult
from .test_export import make_result

RNG = np.random.default_rng(0)


def _photo(W, H):
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _project(v, result, scale=1.0):
    f = result.focal_length * scale
    cx, cy = (c * scale for c in result.principal_point)
    return np.stack([f * v[:, 0] / v[:, 2] + cx, f * v[:, 1] / v[:, 2] + cy], 1)


def test_sphere_depth_matches_ray_intersection():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.3)
    W, H, f, c = 320, 240, 500.0, np.array([0.0, 0.1, 3.0])
    K = intrinsics(f, (W / 2, H / 2))
    r = render_meshes([sphere.vertices + c], sphere.faces, K, (W, H))
    assert r.color.shape == (H, W, 3) and r.mask.shape == r.depth.shape == r.person_id.shape == (H, W)
    assert r.color.dtype == np.float32 and r.depth.dtype == np.float32 and r.person_id.dtype == np.int16
    # exact ray / sphere intersection at every pixel centre
    xs, ys = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(xs - W / 2) / f, (ys - H / 2) / f, np.ones_like(xs)], -1)   # ray with z = 1
    a, b, cc = (d * d).sum(-1), -2 * (d @ c), c @ c - 0.3 ** 2
    disc = b * b - 4 * a * cc
    hit = disc > 0
    z_true = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    interior = hit & (disc > 0.02 * disc.max())              # away from the silhouette
    assert r.mask[interior].all()
    assert np.abs(r.depth[interior] - z_true[interior]).max() < 1e-3
    iou = (r.mask & hit).sum() / (r.mask | hit).sum()
    assert iou > 0.98
    assert np.isinf(r.depth[~r.mask]).all() and (r.person_id[~r.mask] == -1).all()
    assert (r.person_id[r.mask] == 0).all()
    # Lambertian + ambient: the rim is darker than the lit part; colours stay in range
    lum = r.color.sum(-1)
    assert 0 <= r.color.min() and r.color.max() <= 1
    assert lum[interior].max() > 1.3 * lum[r.mask & ~interior].min()


def test_overlay_body_mask_depth_and_bbox():
    res = make_result([(0.05, 0.1, 5.5)], focal=1000.0)
    img = _photo(*res.image_size)
    out = render_overlay(img, res, max_side=None)
    p = res.people[0]
    uv = _project(p.vertices, res)
    # silhouette bbox = projected vertices' bbox (to a pixel)
    ys, xs = np.nonzero(out.mask)
    assert abs(xs.min() + 0.5 - uv[:, 0].min()) < 1.5 and abs(xs.max() + 0.5 - uv[:, 0].max()) < 1.5
    assert abs(ys.min() + 0.5 - uv[:, 1].min()) < 1.5 and abs(ys.max() + 0.5 - uv[:, 1].max()) < 1.5
    # the depth buffer is never behind a vertex, and equals it for the visible ones
    # (3x3 pixel neighbourhood of each projected vertex: vertices lie on silhouettes too)
    W, H = res.image_size
    px = np.floor(uv).astype(int)
    offs = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    nb = np.clip(px[:, None] + offs, 0, [W - 1, H - 1])              # (V, 9, 2)
    d = out.depth[nb[..., 1], nb[..., 0]]                             # (V, 9)
    z = p.vertices[:, 2].astype(np.float64)[:, None]
    assert np.isfinite(d).any(1).mean() > 0.99
    assert (d.min(1) <= z[:, 0] + 0.005).mean() > 0.99
    visible = (np.abs(d - z) < 0.003).any(1)
    assert visible.mean() > 0.3
    # outside the mask the photo is untouched; inside it is blended
    assert (out.overlay[~out.mask] == img[~out.mask]).all()
    assert (out.overlay[out.mask] != img[out.mask]).any(-1).mean() > 0.9
    assert out.overlay.dtype == np.uint8 and out.overlay.shape == img.shape


def test_alpha_one_shows_pure_colour_and_zero_the_photo():
    res = make_result([(0.0, 0.0, 4.0)])
    img = _photo(*res.image_size)
    out0 = render_overlay(img, res, alpha=0.0, max_side=None)
    assert (out0.overlay == img).all() and out0.mask.any()
    out1 = render_overlay(np.zeros_like(img), res, alpha=1.0, colors=[(1.0, 0.0, 0.0)], max_side=None)
    rgb = out1.overlay[out1.mask].astype(int)
    assert (rgb[:, 1:] == 0).all() and rgb[:, 0].min() > 0.3 * 255


def test_nearer_person_wins_whatever_the_order():
    for near_first in (True, False):
        spots = [(0.0, 0.0, 4.0), (0.15, 0.05, 6.0)]
        res = make_result(spots if near_first else spots[::-1], seed=2)
        near = 0 if near_first else 1
        out = render_overlay(_photo(*res.image_size), res, max_side=None)
        alone = [render_overlay(_photo(*res.image_size),
                                ImageResult(**{**res.__dict__, "people": [p]}), max_side=None).mask
                 for p in res.people]
        both = alone[0] & alone[1]
        assert both.sum() > 500, "the two bodies must overlap in the image"
        assert (out.person_id[both] == near).all()
        assert (out.person_id[alone[1 - near] & ~alone[near]] == 1 - near).all()
        assert set(np.unique(out.person_id)) == {-1, 0, 1}


def test_empty_result_leaves_photo_unchanged():
    res = make_result([])
    img = _photo(*res.image_size)
    out = render_overlay(img, res)
    assert (out.overlay == img).all() and out.overlay is not img
    assert not out.mask.any() and np.isinf(out.depth).all() and (out.person_id == -1).all()


def test_capped_resolution_matches_full_resolution():
    res = make_result([(0.0, 0.0, 4.0)], image_size=(1500, 1000), focal=1400.0)
    img = _photo(1500, 1000)
    full = render_overlay(img, res, max_side=None)
    low = render_overlay(img, res, max_side=750)
    iou = (full.mask & low.mask).sum() / (full.mask | low.mask).sum()
    assert iou > 0.95
    both = full.mask & low.mask
    assert np.median(np.abs(full.depth[both] - low.depth[both])) < 0.01
    assert (low.person_id[low.mask] == 0).all() and np.isinf(low.depth[~low.mask]).all()
    diff = np.abs(full.overlay.astype(int) - low.overlay.astype(int))
    assert np.median(diff[both]) < 20


def test_image_of_another_size_scales_the_camera():
    res = make_result([(0.0, 0.0, 4.0)])
    W, H = res.image_size
    full = render_overlay(_photo(W, H), res, max_side=None)
    half = render_overlay(_photo(W // 2, H // 2), res, max_side=None)
    assert half.mask.shape == (H // 2, W // 2)
    down = full.mask[::2, ::2] | full.mask[1::2, 1::2]
    assert (half.mask & down).sum() / (half.mask | down).sum() > 0.85
    with pytest.raises(RenderError, match="aspect ratio"):
        render_overlay(_photo(W, W), res)


def test_near_plane_and_behind_camera_are_skipped():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    K = intrinsics(300.0, (80, 60))
    behind = render_meshes([sphere.vertices + [0, 0, -2.0]], sphere.faces, K, (160, 120))
    assert not behind.mask.any()
    straddle = render_meshes([sphere.vertices + [0, 0, 0.2]], sphere.faces, K, (160, 120))
    # only triangles entirely beyond the near plane (Z >= 0.05 m) are drawn
    assert np.nanmin(np.where(straddle.mask, straddle.depth, np.nan)) >= 0.05


def test_bad_input_errors():
    res = make_result([(0.0, 0.0, 4.0)])
    W, H = res.image_size
    with pytest.raises(RenderError, match="uint8"):
        render_overlay(np.zeros((H, W, 3), np.float32), res)
    with pytest.raises(RenderError, match=r"\(H, W, 3\)"):
        render_overlay(np.zeros((H, W), np.uint8), res)
    with pytest.raises(RenderError, match="alpha"):
        render_overlay(_photo(W, H), res, alpha=1.5)
    with pytest.raises(RenderError, match="one RGB triple"):
        render_overlay(_photo(W, H), make_result([(0, 0, 4.0), (1, 0, 5.0)]), colors=[(1, 0, 0)])
    with pytest.raises(RenderError, match="out of range"):
        render_meshes([np.zeros((3, 3))], np.array([[0, 1, 5]]), intrinsics(100, (5, 5)), (10, 10))


def test_side_view_and_colours():
    res = make_result([(0.0, 0.0, 4.0), (0.6, 0.0, 5.0)])
    out = render_side_view(res)
    assert out.mask.any() and out.overlay.shape == (res.image_size[1], res.image_size[0], 3)
    assert (out.overlay[~out.mask] == 255).all()
    assert not (out.mask[0].any() or out.mask[-1].any() or out.mask[:, 0].any() or out.mask[:, -1].any())
    assert set(np.unique(out.person_id)) == {-1, 0, 1}
    # rotating by 0 degrees without fitting is the plain render
    same = render_side_view(res, angle_deg=0.0, fit=False)
    plain = render_overlay(np.full_like(out.overlay, 255), res, alpha=1.0)
    assert (same.mask == plain.mask).mean() > 0.999
    cols = person_colors(7)
    assert len({tuple(np.round(c, 3)) for c in cols}) == 7
    assert all(min(c) > 0.5 for c in cols)   # pastel
