"""Bounds on detector tiling, shared by every tiled detector (issue 10: a 20000x2 PNG asked for
16,666 tiles and never finished).

A tiled detector picks a tile side per level from the smallest person it looks for; on an image
of extreme aspect ratio (a strip) or a tiny short side that side becomes a few pixels and the
tile count grows with the long side. :func:`bounded_tile_side` raises the side until a level has
at most :data:`MAX_TILES_PER_LEVEL` tiles and the side is at least :data:`MIN_TILE_SIDE`, so the
work per image is bounded whatever its size or shape. Tiles may then be larger than the image's
short side: detectors letterbox them (aspect kept, black outside the image).

Usage (any grid layout)::

    side = bounded_tile_side(side, lambda s: len(my_grid(width, height, s)))
"""
from __future__ import annotations

from typing import Callable

MIN_TILE_SIDE = 64.0        # px; a smaller tile holds people under ~26 px, below what keypoints resolve
MAX_TILES_PER_LEVEL = 64    # photos up to 2.5:1 need <= 28 per level at min_person >= 0.15 (unchanged)
GROWTH = 1.25


def bounded_tile_side(side: float, count: Callable[[float], int], *, min_side: float = MIN_TILE_SIDE,
                      max_tiles: int = MAX_TILES_PER_LEVEL) -> float:
    """The tile side to use instead of ``side`` (px): at least ``min_side``, and grown by
    :data:`GROWTH` steps until ``count(side)`` (the number of tiles the caller's grid makes with
    that side) is at most ``max_tiles``. Returns ``side`` unchanged when it already fits.

    Raises ValueError for a non-finite or non-positive side or a max_tiles < 1.
    """
    if not (side > 0 and side < float("inf")):
        raise ValueError(f"tile side must be a positive finite number of pixels, got {side}")
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    side = max(float(side), float(min_side))
    while count(side) > max_tiles:
        side *= GROWTH
    return side
