"""Overlay renderer: the people of an :class:`~deforhmr_model.files.result.ImageResult` drawn over their photo.

No OpenGL: a vectorised software z-buffer rasteriser in torch (CPU, or any
torch device), so it installs wherever torch does (pyrender/OpenGL native
builds are the usual install failure of HMR demos).

Camera (``hmr2_reference.md`` §4, ``result.py`` module docstring): pinhole,
OpenCV frame (x right, y down, z forward), metres; a camera-frame point
``(X, Y, Z)`` lands at ``u = fx X / Z + cx``, ``v = fy Y / Z + cy`` (pixels,
origin at the top-left corner of the top-left pixel, so pixel ``(x, y)`` has
its centre at ``(x + 0.5, y + 0.5)``). HMR 2.0's pyrender path (mesh rotated
180° about x, OpenGL camera) renders the same image.

Rasterisation, per chunk of triangles (all tensor ops, no per-triangle loop):

1. each triangle's pixel bbox (pixel centres inside its screen bbox, clipped to
   the image) is expanded into a flat list of (triangle, pixel) candidates;
2. screen-space barycentrics and ``1/Z`` are affine in the pixel position, so
   each candidate costs a few multiply-adds; candidates outside are dropped;
3. depth and face id are packed into one int64 key (the IEEE bits of a
   positive float32 sort like the float) and reduced per pixel with
   ``scatter_reduce_(..., "amin")``: the nearest face wins, ties by face id.

Shading: perspective-correct interpolation of per-vertex normals (area-weighted
face normals), turned towards the camera, Lambertian with one directional light
from above the camera plus ambient. Triangles with a vertex closer than
``near`` (0.05 m) or behind the camera are skipped (no clipping).

Large photos are rendered at a capped resolution (long side ``max_side``,
default 2048 px) and upsampled bilinearly (colour, coverage) / nearest (depth,
person id) inside the people's bounding box only.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from deforhmr_model.files.result import ImageResult

__all__ = ["RenderOutput", "MeshRender", "RenderError", "render_overlay", "render_meshes",
           "render_side_view", "person_colors", "intrinsics"]

NEAR = 0.05          # metres: triangles with a vertex nearer than this are skipped
AMBIENT, DIFFUSE = 0.35, 0.65
LIGHT_DIR = (0.25, -0.5, -1.0)   # towards the light, camera frame: from above-right of the camera
_EMPTY_KEY = torch.iinfo(torch.int64).max
_CHUNK = 1 << 22      # (triangle, pixel) candidates per rasterisation step


class RenderError(ValueError):
    """Bad input to the renderer (image shape/dtype, camera, mesh arrays); the message names the fix."""


@dataclass
class MeshRender:
    """Output of :func:`render_meshes` at the rendered resolution (H, W).

    color:     (H, W, 3) float32 in [0, 1], shaded mesh colour, 0 where empty.
    mask:      (H, W) bool, True where a triangle covers the pixel centre.
    depth:     (H, W) float32, camera-frame Z in metres of the nearest surface, inf where empty.
    person_id: (H, W) int16, index into the list of meshes, -1 where empty.
    """

    color: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    person_id: np.ndarray


@dataclass
class RenderOutput:
    """Output of :func:`render_overlay` at the photo's resolution (H, W).

    overlay:   (H, W, 3) uint8 RGB, the photo with the meshes alpha-blended over it.
    mask:      (H, W) bool, pixels covered by a mesh.
    depth:     (H, W) float32, camera-frame Z in metres, inf where empty.
    person_id: (H, W) int16, index into ``result.people``, -1 where empty.
    """

    overlay: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    person_id: np.ndarray


# ----------------------------------------------------------------------------- public API

def render_overlay(image: np.ndarray, result: ImageResult, alpha: float = 0.8,
                   colors: Sequence[Sequence[float]] | None = None, *, max_side: int | None = 2048,
                   device: str | torch.device = "cpu") -> RenderOutput:
    """Draw every person of ``result`` over ``image``.

    Args:
        image: (H, W, 3) uint8 RGB photo. If its size differs from ``result.image_size``
            (e.g. a resized copy) the camera is scaled to it; the aspect ratio must match (1 %).
        result: the people, camera (focal length, principal point, px) and faces.
        alpha: opacity of the meshes in [0, 1].
        colors: one RGB colour in [0, 1] per person; default :func:`person_colors`.
        max_side: render at most this many pixels along the long side and upsample
            (None: always full resolution).
        device: torch device for the rasteriser.
    Returns:
        :class:`RenderOutput` at the image's resolution. With no people the overlay is a
        copy of the image, the mask empty, depth inf and person_id -1.
    Raises:
        RenderError: image not HxWx3 uint8, aspect ratio mismatch, alpha out of range,
            too few colours.
    """
    image = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise RenderError(f"alpha must be in [0, 1], got {alpha}")
    H, W = image.shape[:2]
    K = _camera_for(result, W, H)
    verts = [p.vertices for p in result.people]
    return _composite(image, verts, result.faces, K, alpha, colors, max_side, device)


def render_side_view(result: ImageResult, image: np.ndarray | None = None, alpha: float = 1.0,
                     colors: Sequence[Sequence[float]] | None = None, *, angle_deg: float = 90.0,
                     fit: bool = True, max_side: int | None = 2048,
                     device: str | torch.device = "cpu") -> RenderOutput:
    """Debug view: all people rotated by ``angle_deg`` about the camera's vertical (y) axis
    through their common centroid, seen by the same camera.

    Args:
        result: as for :func:`render_overlay`.
        image: background (H, W, 3) uint8; default a white image of ``result.image_size``.
        alpha, colors, max_side, device: as for :func:`render_overlay`.
        angle_deg: rotation in degrees (positive: the right side of the scene comes forward).
        fit: move the rotated group along the camera axes so that it is centred on the
            principal point and fills ~90 % of the image (people spread in depth would
            otherwise leave the frame); False keeps it at its centroid.
    Returns:
        :class:`RenderOutput` (depth of the moved meshes, metres).
    """
    if image is None:
        W, H = result.image_size
        image = np.full((int(H), int(W), 3), 255, np.uint8)
    image = _check_image(image)
    H, W = image.shape[:2]
    K = _camera_for(result, W, H)
    verts = [np.asarray(p.vertices, np.float64) for p in result.people]
    if verts:
        centre = np.concatenate(verts).mean(0)
        a = math.radians(angle_deg)
        R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        verts = [(v - centre) @ R.T for v in verts]
        if fit:
            pts = np.concatenate(verts)
            ext = np.abs(pts).max(0)                       # half-extents about the centroid
            cx, cy = K[0, 2], K[1, 2]
            room_x, room_y = 0.9 * min(cx, W - cx), 0.9 * min(cy, H - cy)
            z = ext[2] + max(K[0, 0] * ext[0] / room_x, K[1, 1] * ext[1] / room_y, 2 * NEAR)
            centre = np.array([0.0, 0.0, z])
        verts = [v + centre for v in verts]
    return _composite(image, verts, result.faces, K, alpha, colors, max_side, device)


def render_meshes(vertices: Sequence[np.ndarray | torch.Tensor], faces: np.ndarray | torch.Tensor,
                  K: np.ndarray, size: tuple[int, int],
                  colors: Sequence[Sequence[float]] | None = None, *, near: float = NEAR,
                  device: str | torch.device = "cpu") -> MeshRender:
    """Rasterise several triangle meshes with one z-buffer (the nearest surface wins).

    Args:
        vertices: list of (V_i, 3) float arrays, camera frame (OpenCV), metres.
        faces: (F, 3) int vertex indices shared by every mesh, or a list of one (F_i, 3) per mesh.
        K: (3, 3) pinhole intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in pixels.
        size: (W, H) of the rendered image in pixels.
        colors: one RGB colour in [0, 1] per mesh; default :func:`person_colors`.
        near: triangles with any vertex at Z < near (metres) are skipped.
        device: torch device.
    Returns:
        :class:`MeshRender` of shape (H, W).
    Raises:
        RenderError: malformed arrays, size, K or too few colours.
    """
    W, H = (int(s) for s in size)
    if W <= 0 or H <= 0:
        raise RenderError(f"size must be positive (W, H), got {size}")
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise RenderError(f"K must be a 3x3 pinhole matrix with positive focal lengths, got {K.tolist()}")
    n = len(vertices)
    cols = _colors(colors, n)
    face_list = list(faces) if isinstance(faces, (list, tuple)) else [faces] * n
    if len(face_list) != n:
        raise RenderError(f"got {n} vertex arrays but {len(face_list)} face arrays")
    dev = torch.device(device)
    with torch.inference_mode():
        V, F, owner = _stack_meshes(vertices, face_list, dev)
        key = _rasterize(V, F, K, W, H, near)
        return _shade(key, V, F, owner, K, W, H, cols)


def person_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct pastel RGB colours in [0, 1] (golden-ratio hue steps from light blue)."""
    return [colorsys.hsv_to_rgb((0.58 + 0.618034 * i) % 1.0, 0.32, 0.95) for i in range(n)]


def intrinsics(focal_length: float, principal_point: Sequence[float],
               scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """(3, 3) float64 K for a focal length and principal point (px), scaled per axis (sx, sy)."""
    sx, sy = scale
    cx, cy = principal_point
    return np.array([[focal_length * sx, 0, cx * sx], [0, focal_length * sy, cy * sy], [0, 0, 1]])


# ----------------------------------------------------------------------------- compositing

def _composite(image, verts, faces, K, alpha, colors, max_side, device) -> RenderOutput:
    """Render (at a capped resolution), upsample inside the people's box, alpha-blend (uint8,
    OpenCV) over the photo."""
    import cv2
    H, W = image.shape[:2]
    out = RenderOutput(overlay=image.copy(), mask=np.zeros((H, W), bool),
                       depth=np.full((H, W), np.inf, np.float32),
                       person_id=np.full((H, W), -1, np.int16))
    if not verts:
        return out
    s = 1.0 if not max_side or max(W, H) <= max_side else max_side / max(W, H)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    sx, sy = w / W, h / H
    r = render_meshes(verts, faces, np.diag([sx, sy, 1.0]) @ K, (w, h), colors, device=device)
    if not r.mask.any():
        return out
    rgba = np.empty((h, w, 4), np.uint8)  # colour premultiplied by coverage and alpha; coverage
    rgba[..., :3] = r.color * (255 * alpha) + 0.5
    rgba[..., 3] = r.mask * np.uint8(255)
    ys, xs = np.nonzero(r.mask)
    # full-resolution box of pixels whose centres fall inside the (1-px padded) low-res bbox
    x0 = max(0, math.floor((xs.min() - 1) / sx)); x1 = min(W, math.ceil((xs.max() + 2) / sx))
    y0 = max(0, math.floor((ys.min() - 1) / sy)); y1 = min(H, math.ceil((ys.max() + 2) / sy))
    if s == 1.0:
        crop, depth, pid = rgba[y0:y1, x0:x1], r.depth[y0:y1, x0:x1], r.person_id[y0:y1, x0:x1]
    else:
        crop, depth, pid = _upsample(rgba, r.depth, r.person_id, (x0, x1, y0, y1), sx, sy)
    *rgb, cover = cv2.split(crop)
    keep = cv2.LUT(cover, np.round(255 - alpha * np.arange(256)).clip(0, 255).astype(np.uint8))
    photo = out.overlay[y0:y1, x0:x1]
    out.overlay[y0:y1, x0:x1] = cv2.add(cv2.multiply(photo, cv2.merge([keep] * 3), scale=1 / 255),
                                        cv2.merge(rgb))
    mask = (cover >= 128) & np.isfinite(depth)
    out.mask[y0:y1, x0:x1] = mask
    np.copyto(out.depth[y0:y1, x0:x1], depth, where=mask)
    np.copyto(out.person_id[y0:y1, x0:x1], pid, where=mask)
    return out


def _upsample(rgba, depth, pid, box, sx: float, sy: float):
    """Resample low-res rgba (bilinear), depth and person id (nearest) onto the full-res pixels
    of ``box`` = (x0, x1, y0, y1): full-res pixel X samples low-res x = (X + 0.5) sx - 0.5."""
    import cv2
    x0, x1, y0, y1 = box
    M = np.array([[sx, 0, (x0 + 0.5) * sx - 0.5], [0, sy, (y0 + 0.5) * sy - 0.5]])
    size = (x1 - x0, y1 - y0)
    inv = cv2.WARP_INVERSE_MAP
    up = cv2.warpAffine(rgba, M, size, flags=cv2.INTER_LINEAR | inv, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=(0, 0, 0, 0))
    d = cv2.warpAffine(depth, M, size, flags=cv2.INTER_NEAREST | inv, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=float("inf"))
    p = cv2.warpAffine(pid, M, size, flags=cv2.INTER_NEAREST | inv, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=-1)
    return up, d, p


# ----------------------------------------------------------------------------- rasteriser

def _stack_meshes(vertices, face_list, dev):
    """Concatenate meshes: V (N,3) f32, F (M,3) long (global ids), owner (M,) mesh index per face."""
    Vs, Fs, owner, offset = [], [], [], 0
    for i, (v, f) in enumerate(zip(vertices, face_list)):
        v = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).to(dev, torch.float32)
        f = torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f).to(dev, torch.int64)
        if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
            raise RenderError(f"mesh {i}: vertices must be (V, 3) and faces (F, 3), "
                              f"got {tuple(v.shape)} and {tuple(f.shape)}")
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
            raise RenderError(f"mesh {i}: face indices out of range for {v.shape[0]} vertices")
        if not bool(torch.isfinite(v).all()):
            raise RenderError(f"mesh {i}: vertices contain NaN or inf")
        Vs.append(v); Fs.append(f + offset); owner.append(torch.full((f.shape[0],), i, device=dev))
        offset += v.shape[0]
    if not Vs:
        return (torch.zeros(0, 3, device=dev), torch.zeros(0, 3, dtype=torch.int64, device=dev),
                torch.zeros(0, dtype=torch.int64, device=dev))
    return torch.cat(Vs), torch.cat(Fs), torch.cat(owner)


def _project(V: torch.Tensor, K: np.ndarray) -> torch.Tensor:
    """(N,3) camera-frame metres -> (N,2) pixel coordinates (u, v); Z clamped away from 0."""
    z = V[:, 2].clamp_min(1e-6)
    return torch.stack([K[0, 0] * V[:, 0] / z + K[0, 2], K[1, 1] * V[:, 1] / z + K[1, 2]], 1)


def _triangle_setup(uv, z, F, W, H, near):
    """Per-face bbox and affine coefficients of (w0, w1, 1/Z) in local pixel offsets.

    Returns (faces kept (T,), x0, y0, bw, bh (T,) long, coef (T, 9) f64) where for a pixel
    (x0 + dx, y0 + dy): w0 = c0 dx + c1 dy + c2, w1 = c3 dx + c4 dy + c5, 1/Z = c6 dx + c7 dy + c8.
    """
    p = uv[F].double()                           # (M,3,2)
    zf = z[F].double()                           # (M,3)
    lo = torch.ceil(p.amin(1) - 0.5).clamp_min(0)           # first pixel index whose centre is >= min
    hi = torch.floor(p.amax(1) - 0.5)
    hi[:, 0].clamp_(max=W - 1); hi[:, 1].clamp_(max=H - 1)
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = ((zf.amin(1) >= near) & (hi >= lo).all(1) & (area.abs() > 1e-9)).nonzero().squeeze(1)
    a, b, c, lo, hi, zf, area = a[keep], b[keep], c[keep], lo[keep], hi[keep], zf[keep], area[keep]
    o = lo + 0.5                                 # centre of the bbox's first pixel
    # w0 = edge(b, c, p) / area, w1 = edge(c, a, p) / area, edge(q, r, p) = (r-q) x (p-q)
    def edge(q, r):
        ex, ey = r[:, 0] - q[:, 0], r[:, 1] - q[:, 1]
        return -ey / area, ex / area, (ex * (o[:, 1] - q[:, 1]) - ey * (o[:, 0] - q[:, 0])) / area
    e0, e1 = edge(b, c), edge(c, a)
    iz = 1.0 / zf
    e2 = tuple(1.0 - e0[k] - e1[k] if k == 2 else -e0[k] - e1[k] for k in range(3))
    inv = tuple(e0[k] * iz[:, 0] + e1[k] * iz[:, 1] + e2[k] * iz[:, 2] for k in range(3))
    coef = torch.stack([*e0, *e1, *inv], 1)
    size = (hi - lo + 1).long()
    return keep, lo[:, 0].long(), lo[:, 1].long(), size[:, 0], size[:, 1], coef


def _rasterize(V: torch.Tensor, F: torch.Tensor, K: np.ndarray, W: int, H: int,
               near: float) -> torch.Tensor:
    """Z-buffer: (H*W,) int64 keys = float32 bits of Z << 32 | face index (``_EMPTY_KEY`` empty).

    Span rasterisation: every (triangle, bbox row) pair gets the exact run of pixel centres
    inside the triangle from its three edge equations; the runs are expanded into pixels
    (in chunks of ``_CHUNK``) and scatter-min'ed.
    """
    dev = V.device
    key = torch.full((H * W,), _EMPTY_KEY, dtype=torch.int64, device=dev)
    if F.shape[0] == 0:
        return key
    face, x0, y0, bw, bh, coef = _triangle_setup(_project(V, K), V[:, 2], F, W, H, near)
    if len(face) == 0:
        return key
    # (triangle, row) pairs
    tri = torch.repeat_interleave(torch.arange(len(face), device=dev), bh)
    dy = (torch.arange(tri.shape[0], device=dev) - (torch.cumsum(bh, 0) - bh)[tri]).double()
    c = coef[tri]                                                    # (R, 9) f64
    A = torch.stack([c[:, 0], c[:, 3], -c[:, 0] - c[:, 3]], 1)       # d(w_i)/dx
    B0, B1 = c[:, 1] * dy + c[:, 2], c[:, 4] * dy + c[:, 5]
    B = torch.stack([B0, B1, 1.0 - B0 - B1], 1)                      # w_i at dx = 0
    eps = 1e-5                                                       # inclusive edges: no cracks
    bound = (-eps - B) / torch.where(A == 0, torch.ones_like(A), A)
    lo = torch.where(A > 0, bound, torch.full_like(A, -1e9)).amax(1).clamp_min(0).ceil()
    hi = torch.minimum(torch.where(A < 0, bound, torch.full_like(A, 1e9)).amin(1),
                       (bw[tri] - 1).double()).floor()
    empty = ((A == 0) & (B < -eps)).any(1)
    count = torch.where(empty, torch.zeros_like(lo), (hi - lo + 1).clamp_min(0)).long()
    rows = count.nonzero().squeeze(1)
    tri, dy, lo, count = tri[rows], dy[rows], lo[rows], count[rows]
    c = c[rows]
    base = (y0[tri] + dy.long()) * W + x0[tri] + lo.long()          # pixel index of each run start
    iz0 = (c[:, 6] * lo + c[:, 7] * dy + c[:, 8]).float()            # 1/Z at the run start
    slope = c[:, 6].float()
    fid = face[tri]
    ends = torch.cumsum(count, 0)
    start = 0
    while start < len(rows):
        first = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, torch.tensor(first + _CHUNK, device=dev),
                                                     right=True)))
        sl = slice(start, stop)
        n = count[sl]
        r = torch.repeat_interleave(torch.arange(stop - start, device=dev), n)
        k = torch.arange(r.shape[0], device=dev) - (torch.cumsum(n, 0) - n)[r]
        iz = iz0[sl][r] + slope[sl][r] * k
        zbits = (1.0 / iz.clamp_min(1e-12)).view(torch.int32).to(torch.int64)
        key.scatter_reduce_(0, base[sl][r] + k, (zbits << 32) | fid[sl][r], reduce="amin")
        start = stop
    return key


# ----------------------------------------------------------------------------- shading

def _vertex_normals(V: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """(N,3) unit area-weighted vertex normals (zero for unused vertices)."""
    v0, v1, v2 = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=1)
    vn = torch.zeros_like(V).index_add_(0, F.reshape(-1), fn.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(vn, dim=1)


def _shade(key, V, F, owner, K, W, H, cols) -> MeshRender:
    """Colour, depth and mesh id of every z-buffer pixel: the winning face's perspective-correct
    barycentrics interpolate its vertex normals; Lambert + ambient, two-sided."""
    dev = V.device
    hit = (key != _EMPTY_KEY).nonzero().squeeze(1)
    color = torch.zeros(H * W, 3, device=dev)
    depth = torch.full((H * W,), float("inf"), device=dev)
    pid = torch.full((H * W,), -1, dtype=torch.int16, device=dev)
    if len(hit):
        k = key[hit]
        f = (k & 0xFFFFFFFF)
        z = (k >> 32).to(torch.int32).view(torch.float32)
        tri = F[f]                                           # (P,3)
        px = (hit % W).double() + 0.5
        py = (hit // W).double() + 0.5
        uv = _project(V, K).double()[tri]                    # (P,3,2)
        zt = V[:, 2].double()[tri]
        a, b, c = uv[:, 0], uv[:, 1], uv[:, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        def edge(q, r):
            return ((r[:, 0] - q[:, 0]) * (py - q[:, 1]) - (r[:, 1] - q[:, 1]) * (px - q[:, 0])) / area
        w = torch.stack([edge(b, c), edge(c, a)], 1)
        w = torch.cat([w, 1 - w.sum(1, keepdim=True)], 1) / zt     # perspective-correct weights
        w = (w / w.sum(1, keepdim=True)).float()
        n = (_vertex_normals(V, F)[tri] * w[..., None]).sum(1)
        ray = torch.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1],
                           torch.ones_like(px)], 1).float()
        n = torch.nn.functional.normalize(n, dim=1)
        n = torch.where(((n * ray).sum(1) > 0)[:, None], -n, n)   # face the camera
        light = torch.nn.functional.normalize(torch.tensor(LIGHT_DIR, device=dev), dim=0)
        lam = AMBIENT + DIFFUSE * (n @ light).clamp_min(0)
        base = torch.tensor(cols, dtype=torch.float32, device=dev)[owner[f]]
        color[hit] = (base * lam[:, None]).clamp(0, 1)
        depth[hit] = z
        pid[hit] = owner[f].to(torch.int16)
    mask = (pid >= 0).reshape(H, W)
    return MeshRender(color=color.reshape(H, W, 3).cpu().numpy(), mask=mask.cpu().numpy(),
                      depth=depth.reshape(H, W).cpu().numpy(),
                      person_id=pid.reshape(H, W).cpu().numpy())


# ----------------------------------------------------------------------------- checks

def _check_image(image) -> np.ndarray:
    if torch.is_tensor(image):
        raise RenderError("image must be an (H, W, 3) uint8 numpy array, got a torch tensor; "
                          "convert it with (t.clamp(0, 1) * 255).byte().cpu().numpy()")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RenderError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype "
                          f"{image.dtype}; load it with deforhmr_model.files.image_io.load_image")
    return image


def _camera_for(result: ImageResult, W: int, H: int) -> np.ndarray:
    RW, RH = result.image_size
    sx, sy = W / RW, H / RH
    if abs(sx / sy - 1) > 0.01:
        raise RenderError(f"image is {W}x{H} but the result was computed on a {RW}x{RH} image "
                          f"(different aspect ratio); pass the photo the result came from")
    return intrinsics(result.focal_length, result.principal_point, (sx, sy))


def _colors(colors, n: int) -> list[tuple[float, float, float]]:
    if colors is None:
        return person_colors(n)
    cols = [tuple(float(x) for x in c) for c in colors]
    if len(cols) < n or any(len(c) != 3 for c in cols):
        raise RenderError(f"colors must give one RGB triple in [0, 1] per mesh ({n}), got {len(cols)}")
    return cols[:n]
