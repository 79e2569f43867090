"""Decoder, heads and the assembled model (paper §3.2; hmr2_reference.md §2) (CPU, seeded)."""
import pytest
import torch

from deforhmr_model.network.configs import VARIANTS, ModelConfig, make_config
from deforhmr_model.network.model import HMROutput, build_model
from deforhmr_model.people.crop import IMAGE_MEAN, IMAGE_STD
from deforhmr_model.geometry.rotation import rot6d_to_rotmat, rotmat_to_rot6d

HMR2_HEAD_PARAMS = 39_547_037   # hmr2_reference.md §2.4 (verified total)
TINY = dict(depth=2, dim=32, mlp_dim=32, self_heads=2, self_dim_head=8, cross_dim_head=4)


def reference_hmr2_head_keys() -> dict[str, tuple]:
    """smpl_head.* of hmr2_reference.md §2.4, written from its tables."""
    keys = {
        "init_body_pose": (1, 144), "init_betas": (1, 10), "init_cam": (1, 3),
        "transformer.pos_embedding": (1, 1, 1024),
        "transformer.to_token_embedding.weight": (1024, 1), "transformer.to_token_embedding.bias": (1024,),
        "decpose.weight": (144, 1024), "decpose.bias": (144,),
        "decshape.weight": (10, 1024), "decshape.bias": (10,),
        "deccam.weight": (3, 1024), "deccam.bias": (3,),
    }
    for layer in range(6):
        p = f"transformer.transformer.layers.{layer}."
        keys.update({
            p + "0.norm.weight": (1024,), p + "0.norm.bias": (1024,),
            p + "0.fn.to_qkv.weight": (1536, 1024),
            p + "0.fn.to_out.0.weight": (1024, 512), p + "0.fn.to_out.0.bias": (1024,),
            p + "1.norm.weight": (1024,), p + "1.norm.bias": (1024,),
            p + "1.fn.to_kv.weight": (1024, 1280), p + "1.fn.to_q.weight": (512, 1024),
            p + "1.fn.to_out.0.weight": (1024, 512), p + "1.fn.to_out.0.bias": (1024,),
            p + "2.norm.weight": (1024,), p + "2.norm.bias": (1024,),
            p + "2.fn.net.0.weight": (1024, 1024), p + "2.fn.net.0.bias": (1024,),
            p + "2.fn.net.3.weight": (1024, 1024), p + "2.fn.net.3.bias": (1024,),
        })
    return keys


def test_reg_s_head_is_hmr2_key_for_key():
    head = build_model("reg-s", "vit-h", device="meta").smpl_head
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert got == reference_hmr2_head_keys()
    assert len(got) == 114
    assert sum(p.numel() for p in head.parameters()) == HMR2_HEAD_PARAMS
    assert sum(b.numel() for b in head.buffers()) == 157


@pytest.mark.parametrize("variant,heads,groups,pe", [
    ("def-m", 16, 8, "relative"), ("def-m-h8g4o2", 8, 4, "relative"), ("def-s", 16, 8, "relative"),
    ("def-m-pe-abs", 16, 8, "absolute"), ("def-m-pe-none", 16, 8, "none")])
def test_deformable_variants_full_size_shapes(variant, heads, groups, pe):
    model = build_model(variant, "vit-h", device="meta")
    sd = {k: tuple(v.shape) for k, v in model.smpl_head.state_dict().items()}
    q = 25 if "-m" in variant else 1
    cross = "transformer.transformer.layers.5.1.fn."
    assert sd["transformer.pos_embedding"] == (1, q, 1024)
    assert sd[cross + "offset.0.weight"] == (1280 // groups, 1, 5, 5)
    assert sd[cross + "offset.3.weight"] == (2, 1280 // groups, 1, 1)
    assert sd[cross + "to_q.weight"] == (heads * 64, 1024)
    assert sd[cross + "to_kv.weight"] == (2 * heads * 64, 1280)
    assert (cross + "rpe" in sd) == (pe == "relative") and (cross + "abs_pe" in sd) == (pe == "absolute")
    if pe == "relative":
        assert sd[cross + "rpe"] == (q, heads, 16, 12)
    assert sd["decpose.weight"] == ((6, 1024) if q == 25 else (144, 1024))
    assert model.config.decoder.offset_range == (2.0 if variant.endswith("o2") else 1.0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_runs_and_returns_documented_shapes(variant):
    torch.manual_seed(0)
    model = build_model(variant, "vit-tiny", **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 192))
    assert isinstance(out, HMROutput)
    assert out.global_orient.shape == (2, 3, 3) and out.body_pose.shape == (2, 23, 3, 3)
    assert out.betas.shape == (2, 10) and out.pred_cam.shape == (2, 3) and out.pose_6d.shape == (2, 24, 6)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in
               (out.global_orient, out.body_pose, out.betas, out.pred_cam, out.pose_6d))
    eye = torch.eye(3).expand(2, 23, 3, 3)
    torch.testing.assert_close(out.body_pose @ out.body_pose.transpose(-1, -2), eye, atol=1e-5, rtol=0)


def _zero_readouts(model):
    with torch.no_grad():
        for lin in (model.smpl_head.decpose, model.smpl_head.decshape, model.smpl_head.deccam):
            lin.weight.zero_()
            lin.bias.zero_()


@pytest.mark.parametrize("variant", ["def-m", "reg-s"])
def test_default_mean_parameters_are_upright_rest_pose(variant):
    model = build_model(variant, "vit-tiny", **TINY).eval()
    _zero_readouts(model)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 192))
    torch.testing.assert_close(out.global_orient[0], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    torch.testing.assert_close(out.body_pose[0], torch.eye(3).expand(23, 3, 3))
    assert torch.equal(out.betas, torch.zeros(1, 10))
    torch.testing.assert_close(out.pred_cam, torch.tensor([[0.9, 0.0, 0.0]]))


def test_set_mean_params_moves_the_ief_start():
    model = build_model("reg-m", "vit-tiny", **TINY).eval()
    _zero_readouts(model)
    pose = rotmat_to_rot6d(rot6d_to_rotmat(torch.randn(24, 6)))
    model.set_mean_params(pose.reshape(144), torch.arange(10.0), torch.tensor([1.1, 0.2, -0.3]))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 192))
    torch.testing.assert_close(out.pose_6d[0], pose)
    torch.testing.assert_close(out.betas[0], torch.arange(10.0))
    with pytest.raises(ValueError, match="144"):
        model.set_mean_params(torch.zeros(10), torch.zeros(10), torch.zeros(3))


def test_multi_query_readout_pose_token_j_is_joint_j_and_shape_token_gives_betas_and_cam():
    torch.manual_seed(0)
    model = build_model("def-m", "vit-tiny", **TINY).eval()
    head = model.smpl_head
    with torch.no_grad():   # make each layer's residual branches output zero: tokens pass through
        for sa, ca, ff in head.transformer.transformer.layers:
            for lin in (sa.fn.to_out[0], ca.fn.to_out[0], ff.fn.net[3]):
                lin.weight.zero_()
                lin.bias.zero_()
        head.transformer.to_token_embedding.bias.zero_()
        head.transformer.pos_embedding.zero_()
        head.transformer.pos_embedding[0, :, 0] = torch.arange(25.0)   # token q carries q in channel 0
        _zero_readouts(model)
        head.decpose.weight[0, 0] = 1.0                                  # 6D component 0 <- channel 0
        head.decshape.weight[3, 0] = 1.0                                 # beta 3 <- channel 0
        head.deccam.weight[1, 0] = 1.0                                   # tx <- channel 0
        head.init_body_pose.zero_()
        out = head(model.forward_features(torch.randn(1, 3, 256, 192)))
    torch.testing.assert_close(out.pose_6d[0, :, 0], torch.arange(24.0))
    assert out.betas[0, 3] == 24.0 and out.pred_cam[0, 1] == 24.0


def test_rot6d_round_trip_of_model_outputs():
    torch.manual_seed(1)
    model = build_model("def-m", "vit-tiny", **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 192))
    rot = rot6d_to_rotmat(out.pose_6d)
    torch.testing.assert_close(rot[:, 0], out.global_orient)
    torch.testing.assert_close(rot[:, 1:], out.body_pose)
    torch.testing.assert_close(rot6d_to_rotmat(rotmat_to_rot6d(rot)), rot, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant,groups,n", [("def-m", 8, 192), ("def-s", 8, 192), ("reg-m", 1, 192)])
def test_attention_maps_accessor(variant, groups, n):
    torch.manual_seed(2)
    model = build_model(variant, "vit-tiny", **TINY).eval()
    images = torch.randn(2, 3, 256, 192)
    maps = model.attention_maps(images)
    q = 25 if variant.endswith("-m") else 1
    heads = model.config.decoder.cross_heads
    assert len(maps) == TINY["depth"]
    for m in maps:
        assert m.positions.shape == (2, groups, 16, 12, 2) and m.weights.shape == (2, heads, q, n)
        torch.testing.assert_close(m.weights.sum(-1), torch.ones(2, heads, q))
        assert m.positions.abs().max() < 1 + 1 / 12 + 1e-6             # within λo/2 cells of the map
    with torch.no_grad():
        torch.testing.assert_close(model(images).pose_6d,
                                   model.forward_head(model.forward_features(images)).pose_6d)


def test_square_hmr2_crop_is_trimmed_to_the_central_192_columns():
    torch.manual_seed(3)
    model = build_model("def-m", "vit-tiny", **TINY).eval()
    square = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model(square).pose_6d, model(square[..., 32:224]).pose_6d)
    with pytest.raises(ValueError, match="256, 192"):
        model(torch.randn(1, 3, 200, 200))


def test_deformable_with_zero_offsets_and_bias_equals_regular_model():
    torch.manual_seed(4)
    reg = build_model("reg-s", "vit-tiny", **TINY, cross_heads=4).eval()
    dfm = build_model("def-s", "vit-tiny", **TINY, cross_heads=4, groups=4).eval()
    sd = dfm.state_dict()
    sd.update(reg.state_dict())
    dfm.load_state_dict(sd)
    with torch.no_grad():
        for layer in dfm.smpl_head.transformer.transformer.layers:
            layer[1].fn.offset[3].weight.zero_()
            layer[1].fn.rpe.zero_()
        images = torch.randn(2, 3, 256, 192)
        torch.testing.assert_close(dfm(images).pose_6d, reg(images).pose_6d, atol=1e-5, rtol=1e-4)


def test_bad_names_and_overrides_are_clear_errors():
    with pytest.raises(ValueError, match="def-m-pe-abs"):
        build_model("def-x", "vit-h", device="meta")
    with pytest.raises(ValueError, match="vit-tiny"):
        build_model("def-m", "vit-g", device="meta")
    with pytest.raises(ValueError, match="encoder_depth"):
        build_model("def-m", "vit-tiny", layers=3)
    with pytest.raises(ValueError, match="divisible by groups"):
        build_model("def-m", "vit-tiny", cross_heads=12)
    with pytest.raises(ValueError, match="deformable"):
        build_model("reg-m", "vit-tiny", pe="relative")


def test_config_is_json_round_trip():
    cfg = make_config("def-m-h8g4o2", "vit-b", depth=3, encoder_depth=2)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.decoder.groups == 4 and cfg.encoder.depth == 2 and cfg.encoder.embed_dim == 768
    with pytest.raises(ValueError, match="config"):
        ModelConfig.from_json('{"variant": "def-m"}')


def test_image_normalisation_constants():
    assert IMAGE_MEAN == (0.485, 0.456, 0.406) and IMAGE_STD == (0.229, 0.224, 0.225)


def test_cross_attention_kind_is_chosen_once_by_the_builder():
    from deforhmr_model.network.configs import CROSS_ATTENTION_TYPES
    from deforhmr_model.network.deformable_attention import CrossAttention, DeformableCrossAttention
    from deforhmr_model.network.model import CROSS_ATTENTION
    assert set(CROSS_ATTENTION) == set(CROSS_ATTENTION_TYPES)
    for variant, kind in (("reg-s", CrossAttention), ("def-m", DeformableCrossAttention)):
        layers = build_model(variant, "vit-tiny", depth=2, dim=32, mlp_dim=32).smpl_head.transformer.transformer.layers
        assert all(type(cross.fn) is kind for _, cross, _ in layers)
