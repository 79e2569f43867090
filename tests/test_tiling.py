"""Detector tiling is bounded for any image size or shape (issue 10: a 20000x2 PNG never finished)."""
import itertools

import numpy as np
import pytest

from deforhmr_model.people.detection import TILE_STRETCH, _grid, tile_regions
from deforhmr_model.people.tiling import MAX_TILES_PER_LEVEL, MIN_TILE_SIDE, bounded_tile_side


@pytest.mark.parametrize("size", [(20000, 2), (2, 20000), (4000, 2), (1000, 1), (20000, 300), (300, 20000),
                                  (65536, 64), (12000, 1000), (100000, 100000)])
@pytest.mark.parametrize("min_person", [0.01, 0.2])
def test_tile_count_is_bounded_for_strips_and_huge_images(size, min_person):
    regions = tile_regions(*size, min_person, 0.4)
    assert len(regions) <= 8 * MAX_TILES_PER_LEVEL
    assert all(max(x1 - x0, y1 - y0) >= MIN_TILE_SIDE for x0, y0, x1, y1 in regions)
    if min(size) < MIN_TILE_SIDE:
        assert regions == []                       # the whole-image pass is the only one


def test_ordinary_photos_keep_their_tiles():
    """Up to 2.5:1 and min_person >= 0.15 no level reaches the bound: tiles as before the bound
    (the finest level's tiles reach min_person x the short side, all levels within the image)."""
    for w, h in itertools.product(range(200, 6100, 311), range(200, 6100, 277)):
        if max(w, h) / min(w, h) > 2.5:
            continue
        for mp in (0.15, 0.2, 0.4):
            regions = tile_regions(w, h, mp, 0.4)
            if regions:
                smallest = min(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in regions)
                assert smallest <= TILE_STRETCH * 2.5 * mp * min(w, h) * 1.001   # a spanning tile stretches
            assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in regions)


def test_bounded_tile_side():
    count = lambda s: len(_grid(20000, 300, s, 0.4))  # noqa: E731
    side = bounded_tile_side(10.0, count)
    assert side >= MIN_TILE_SIDE and count(side) <= MAX_TILES_PER_LEVEL
    assert bounded_tile_side(500.0, lambda s: 1) == 500.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            bounded_tile_side(bad, count)


def test_strips_are_detected_in_one_pass_or_refused_as_too_small():
    from deforhmr_model.people.detection import BlazePoseDetector
    det = BlazePoseDetector(min_person=0.2)
    assert det.detect(np.zeros((20, 20000, 3), np.uint8)) == []          # one whole-image pass
    with pytest.raises(ValueError, match=r"20000x2 px is too small .*use a larger photo"):
        det.detect(np.zeros((2, 20000, 3), np.uint8))
