"""Where the decoder's cross-attention looks (paper Fig. 1 and 5), per person, on the photo.

For a chosen decoder layer ``l`` and cross-attention head ``h`` the network reports
(:meth:`deforhmr_model.network.model.DeforHMR.attention_maps`, :class:`AttentionMaps`):

* deformable cross-attention (``def-*``): the N = Hk x Wk sampling positions P of the head's
  offset group g = h // (heads / G) and the head's attention weights over those N keys;
* regular cross-attention (``reg-*``, e.g. the converted HMR 2.0 checkpoint): the fixed
  16 x 12 token grid and the head's attention weights over the 192 tokens.

Coordinates: P is normalised (x, y) in [-1, 1] over the context map (``align_corners=False``,
so -1/+1 are the outer edges of the token grid). Token (i, j) is the patch-embedding window
``[s j - pad, s j - pad + s)`` x ``[s i - pad, s i - pad + s)`` of the 256 x 192 network input
(s = 16, pad = 2 for ViTPose), so a normalised x maps to input column ``s * (x + 1) / 2 * Wk - pad``
(likewise rows). The input is columns 32:224 of the 256 x 256 person crop, whose affine
(:func:`deforhmr_model.people.crop.crop_person`) maps back to photo pixels.

:func:`person_attention` returns the points in photo pixels; :func:`draw_attention` draws them
over the photo and over each person crop (circles sized and coloured by weight for sampling
points; a coloured 16 x 12 cell map for the regular grid).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from deforhmr_model.people.crop import CROP_SIZE, CROP_WIDTH, IMAGE_MEAN, IMAGE_STD, crop_person


@dataclass
class PersonAttention:
    """One person's cross-attention for one layer and head.

    kind: "deformable" (sampling points) or "regular" (token grid).
    bbox: (4,) person box xyxy px (photo).
    grid_box: (4,) xyxy px (photo) of the area the token grid covers: where the normalised
        [-1, 1] frame of the sampling positions lies.
    points: (N, 2) float32 photo px (x, y) of the keys (sampling points or token centres).
    crop_points: (N, 2) float32 px (x, y) in the 256 x 192 network input.
    weights: (N,) float32 attention probabilities of the head for ``query`` (sum 1), or their
        mean over all queries when query is None.
    grid_shape: (Hk, Wk) of the key grid.
    crop: (256, 192, 3) uint8 RGB network input (un-normalised) for drawing.
    crop_grid_box: (4,) xyxy px of the token-grid area in the network input.
    layer, head, query: what was asked (query None = mean over queries).
    """

    kind: str
    bbox: np.ndarray
    grid_box: np.ndarray
    points: np.ndarray
    crop_points: np.ndarray
    weights: np.ndarray
    grid_shape: tuple[int, int]
    crop: np.ndarray
    crop_grid_box: np.ndarray
    layer: int
    head: int
    query: int | None


def attention_shape(model) -> tuple[int, int, int]:
    """(decoder layers, cross-attention heads, query tokens) of a DeforHMR model."""
    dec = model.config.decoder
    return dec.depth, dec.cross_heads, dec.num_queries


def person_attention(model, image: np.ndarray, boxes: Sequence, layer: int = -1, head: int = 0,
                     query: int | None = None) -> list[PersonAttention]:
    """Cross-attention of ``layer``/``head`` for each box, in photo pixels.

    Args:
        model: a :class:`~deforhmr_model.network.model.DeforHMR` (any variant).
        image: HxWx3 uint8 RGB photo.
        boxes: per person a (4,) xyxy px box.
        layer: decoder layer, 0-based (negative counts from the end: -1 = last).
        head: cross-attention head, 0-based.
        query: query token (0..Q-1; for 25-query models token j < 24 is SMPL joint j, 24 the
            shape/camera token), or None for the mean over all queries.
    Raises:
        ValueError: layer, head or query out of range (the message gives the valid range).
    """
    depth, heads, queries = attention_shape(model)
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer} out of range: this model has {depth} decoder layers (0..{depth - 1})")
    if not 0 <= head < heads:
        raise ValueError(f"head {head} out of range: this model has {heads} cross-attention heads (0..{heads - 1})")
    if query is not None and not 0 <= query < queries:
        raise ValueError(f"query {query} out of range: this model has {queries} query tokens (0..{queries - 1})")
    layer = layer % depth
    if len(boxes) == 0:
        return []
    crops = [crop_person(image, np.asarray(b, np.float32)) for b in boxes]
    param = next(model.parameters())
    x = torch.stack([c.image for c in crops]).to(param.device)
    with torch.inference_mode():
        maps = model.attention_maps(x)[layer]
    pos = maps.positions.float().cpu()                              # (B, G, Hk, Wk, 2)
    w = maps.weights.float().cpu()                                  # (B, heads, Q, N)
    b, g, hk, wk, _ = pos.shape
    group = head // (heads // g)
    pts = pos[:, group].reshape(b, hk * wk, 2).numpy()
    wts = (w[:, head].mean(1) if query is None else w[:, head, query]).numpy()
    kind = "deformable" if model.config.decoder.cross_attention == "deformable" else "regular"

    enc = model.backbone.patch_embed.proj
    stride, pad = float(enc.stride[0]), float(enc.padding[0])
    gh, gw = model.backbone.grid_size if hasattr(model.backbone, "grid_size") else (hk, wk)
    out = []
    for k, c in enumerate(crops):
        u = stride * (pts[k, :, 0] + 1) / 2 * gw - pad             # network-input px (0..192)
        v = stride * (pts[k, :, 1] + 1) / 2 * gh - pad
        crop_xy = np.stack([u, v], -1).astype(np.float32)
        corners = np.array([[-pad, -pad], [stride * gw - pad, stride * gh - pad]], np.float32)
        out.append(PersonAttention(
            kind=kind, bbox=np.asarray(boxes[k], np.float32), grid_box=_to_photo(corners, c).reshape(4),
            points=_to_photo(crop_xy, c), crop_points=crop_xy, weights=wts[k].astype(np.float32),
            grid_shape=(hk, wk), crop=_crop_rgb(c.image), crop_grid_box=corners.reshape(4), layer=layer, head=head, query=query))
    return out


def _to_photo(xy: np.ndarray, crop) -> np.ndarray:
    """Network-input px (x, y) -> photo px through the crop's affine (photo -> 256x256 crop)."""
    A = crop.affine
    sq = xy + np.array([(CROP_SIZE - CROP_WIDTH) / 2, 0.0])
    return ((sq - A[:, 2]) / np.array([A[0, 0], A[1, 1]])).astype(np.float32)


def _crop_rgb(t: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return ((t * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- drawing

def draw_attention(image: np.ndarray, people: Sequence[PersonAttention], max_side: int = 1600,
                   panel: bool = True) -> np.ndarray:
    """The photo with each person's attention drawn on it, and (``panel``) each person's
    network input with the same drawing, enlarged, to the right. Returns HxWx3 uint8 RGB.

    Sampling points: filled circles, area and colour (inferno) by weight relative to the
    person's largest weight; regular grid: each token cell tinted by its weight. The token-grid
    area is outlined in white, the person box in green.
    """
    img = np.ascontiguousarray(image[..., :3]).copy()
    H, W = img.shape[:2]
    scale = min(1.0, max_side / max(H, W))
    if scale < 1.0:
        img = cv2.resize(img, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
    for p in people:
        _draw_one(img, p.points * scale, p.weights, p.grid_shape, p.kind, p.grid_box * scale, p.bbox * scale)
    if not panel or not people:
        return img
    tiles = []
    for p in people:
        crop = draw_crop(p)
        th = img.shape[0]
        tiles.append(cv2.resize(crop, (round(crop.shape[1] * th / crop.shape[0]), th), interpolation=cv2.INTER_LINEAR))
    return np.concatenate([img, *tiles], axis=1)


def draw_crop(p: PersonAttention, zoom: int = 2) -> np.ndarray:
    """The person's network input enlarged ``zoom`` times ((256 zoom) x (192 zoom) x 3 uint8 RGB)
    with the attention drawn on it."""
    crop = cv2.resize(p.crop, (p.crop.shape[1] * zoom, p.crop.shape[0] * zoom), interpolation=cv2.INTER_LINEAR)
    _draw_one(crop, p.crop_points * zoom, p.weights, p.grid_shape, p.kind, p.crop_grid_box * zoom, None)
    return crop


def _draw_one(img, pts, weights, grid_shape, kind, grid_box, bbox) -> None:
    """Draw one person's keys into ``img`` (in place): colour = weight scaled min..max (inferno);
    sampling points: radius by weight / max weight; token cells: opacity by the same."""
    span = float(weights.max() - weights.min())
    rel = (weights - weights.min()) / span if span > 1e-12 else np.ones_like(weights)
    size = weights / max(float(weights.max()), 1e-12)
    colors = cv2.applyColorMap((rel * 255).astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_INFERNO)[:, 0, ::-1]
    cell = max((grid_box[2] - grid_box[0]) / grid_shape[1], 1.0)
    H, W = img.shape[:2]
    if kind == "regular":
        half = cell / 2
        for (x, y), c, r in zip(pts, colors, rel):
            x0, y0 = max(int(round(x - half)), 0), max(int(round(y - half)), 0)
            x1, y1 = min(int(round(x + half)), W), min(int(round(y + half)), H)
            if x1 > x0 and y1 > y0:
                a = 0.15 + 0.6 * float(r)
                img[y0:y1, x0:x1] = (img[y0:y1, x0:x1] * (1 - a) + c.astype(np.float32) * a).astype(np.uint8)
    else:
        for i in np.argsort(weights):                             # strongest drawn last (on top)
            x, y = pts[i]
            r = max(1.5, cell * 0.4 * np.sqrt(size[i]))
            cv2.circle(img, (int(round(x)), int(round(y))), int(round(r)), tuple(int(v) for v in colors[i]), -1,
                       lineType=cv2.LINE_AA)
    thick = max(1, int(round(cell / 12)))
    cv2.rectangle(img, (int(grid_box[0]), int(grid_box[1])), (int(grid_box[2]), int(grid_box[3])),
                  (255, 255, 255), thick)
    if bbox is not None:
        cv2.rectangle(img, (int(bbox[0]), int(bbox[1])), (int(bbox[2]), int(bbox[3])), (60, 220, 60), thick)
