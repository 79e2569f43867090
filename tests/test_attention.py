"""Attention maps (paper Fig. 1, 5) on a real photo with test-made checkpoints.

def-m: a tiny deformable model (vit-tiny encoder, 2 decoder layers) saved in the product's
safetensors format; reg-s: HMR 2.0's regular cross-attention, imported from a Lightning-style
``.ckpt`` as the HMR 2.0 release holds it. Random weights: the test checks geometry (points in
photo pixels inside the person's token-grid area), the weights (probabilities) and the image.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deforhmr_model.attention import draw_attention, person_attention
from deforhmr_model.cli import main
from deforhmr_model.files.image_io import load_image
from deforhmr_model.network.checkpoint import convert_checkpoint, save_checkpoint
from deforhmr_model.network.model import build_model

PHOTO = ("coco", "000000197388.jpg")           # five skiers


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("att")
    torch.manual_seed(0)
    deform = build_model("def-m", "vit-tiny", depth=2, dim=64, mlp_dim=64)
    with torch.no_grad():   # offsets of a trained model are not zero: spread them (tanh-bounded anyway)
        for layer in deform.smpl_head.transformer.transformer.layers:
            layer[1].fn.offset[-1].weight.mul_(20.0)
    save_checkpoint(deform, d / "tiny-def-m.safetensors")
    reg = build_model("reg-s", "vit-tiny", dim=64, depth=2, mlp_dim=64, self_dim_head=8, cross_dim_head=8)
    torch.save({"state_dict": {**reg.state_dict(), "initialized": torch.tensor(True)}}, d / "hmr2.ckpt")
    convert_checkpoint(d / "hmr2.ckpt", d / "tiny-reg-s.safetensors")
    return d


def _inside(points, box, tol=0.5):
    return ((points[:, 0] >= box[0] - tol) & (points[:, 0] <= box[2] + tol)
            & (points[:, 1] >= box[1] - tol) & (points[:, 1] <= box[3] + tol)).all()


@pytest.mark.parametrize("name,kind,heads", [("tiny-def-m", "deformable", 16), ("tiny-reg-s", "regular", 8)])
def test_attention_points_land_inside_the_crop(photos, checkpoints, name, kind, heads):
    from deforhmr_model.network.checkpoint import load_model
    model = load_model(checkpoints / f"{name}.safetensors")
    image = load_image(photos / PHOTO[0] / PHOTO[1])
    boxes = [np.array([180, 60, 330, 400], np.float32), np.array([20, 200, 120, 330], np.float32)]
    people = person_attention(model, image, boxes, layer=1, head=heads - 1, query=None)
    assert [p.kind for p in people] == [kind, kind]
    for p, box in zip(people, boxes):
        assert p.points.shape == (192, 2) and p.weights.shape == (192,)
        assert np.isclose(p.weights.sum(), 1.0, atol=1e-4) and (p.weights >= 0).all()
        assert _inside(p.points, p.grid_box)                           # where the token grid lies
        # the token grid covers the person box (HMR 2.0's crop only enlarges the box)
        assert p.grid_box[0] <= box[0] + 3 and p.grid_box[2] >= box[2] - 3
        assert p.grid_box[1] <= box[1] + 3 and p.grid_box[3] >= box[3] - 3
        if kind == "regular":    # the fixed grid: token centres 16 px apart in the 256x192 input
            assert np.allclose(np.diff(p.crop_points[:12, 0]), 16.0, atol=1e-4)
            assert np.allclose(p.crop_points[0], [6.0, 6.0], atol=1e-4)   # ViTPose's 2 px padding
        else:                    # deformable points moved off the grid
            grid = people[0].crop_points
            assert np.abs(np.diff(grid[:12, 0]) - 16.0).max() > 0.5
    single = person_attention(model, image, boxes[:1], layer=-1, head=0, query=0)[0]
    assert single.layer == 1 and np.isclose(single.weights.sum(), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match=f"head {heads} out of range.*{heads} cross-attention heads"):
        person_attention(model, image, boxes, head=heads)
    with pytest.raises(ValueError, match="layer 2 out of range"):
        person_attention(model, image, boxes, layer=2)


def test_attention_command_writes_an_image(photos, checkpoints, tmp_path, capsys):
    out = tmp_path / "att.png"
    code = main(["attention", str(photos / PHOTO[0] / PHOTO[1]), "--model", str(checkpoints / "tiny-def-m.safetensors"),
                 "--layer", "1", "--head", "3", "--max-people", "2", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "sampling points" in capsys.readouterr().out
    im = np.asarray(Image.open(out))
    photo = load_image(photos / PHOTO[0] / PHOTO[1])
    assert im.shape[0] == photo.shape[0] and im.shape[1] > photo.shape[1]   # photo + 2 crop panels
    assert np.abs(im[:, :photo.shape[1]].astype(int) - photo).mean() > 1    # drawn on
    assert main(["attention", str(photos / PHOTO[0] / PHOTO[1]), "--model", str(checkpoints / "tiny-def-m.safetensors"),
                 "--head", "99", "-o", str(tmp_path / "x.png")]) == 2
    assert "head 99 out of range" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_draw_without_people_returns_the_photo(photos):
    image = load_image(photos / PHOTO[0] / PHOTO[1])
    assert np.array_equal(draw_attention(image, []), image)
