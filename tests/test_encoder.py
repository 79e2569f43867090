"""ViTPose encoder: layout, sizes and behaviour against hmr2_reference.md §1 (CPU, seeded)."""
import pytest
import torch
import torch.nn.functional as F

from deforhmr_model.network.encoder import ViTEncoder
from deforhmr_model.network.model import build_model

VITH_PARAMS = 630_912_000     # hmr2_reference.md §1.3 (verified total)


def reference_vitpose_keys(embed: int, depth: int) -> dict[str, tuple]:
    """The backbone state_dict of hmr2_reference.md §1.3, written from its tables."""
    keys = {
        "pos_embed": (1, 193, embed),
        "patch_embed.proj.weight": (embed, 3, 16, 16),
        "patch_embed.proj.bias": (embed,),
        "last_norm.weight": (embed,),
        "last_norm.bias": (embed,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({
            b + "norm1.weight": (embed,), b + "norm1.bias": (embed,),
            b + "attn.qkv.weight": (3 * embed, embed), b + "attn.qkv.bias": (3 * embed,),
            b + "attn.proj.weight": (embed, embed), b + "attn.proj.bias": (embed,),
            b + "norm2.weight": (embed,), b + "norm2.bias": (embed,),
            b + "mlp.fc1.weight": (4 * embed, embed), b + "mlp.fc1.bias": (4 * embed,),
            b + "mlp.fc2.weight": (embed, 4 * embed), b + "mlp.fc2.bias": (embed,),
        })
    return keys


def test_vit_h_layout_and_parameter_count():
    enc = build_model("reg-s", "vit-h", device="meta").backbone
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == reference_vitpose_keys(1280, 32)
    assert len(got) == 389
    assert sum(p.numel() for p in enc.parameters()) == VITH_PARAMS
    assert list(enc.buffers()) == []


@pytest.mark.parametrize("name,embed,depth", [("vit-l", 1024, 24), ("vit-b", 768, 12), ("vit-s", 384, 12)])
def test_smaller_vitpose_sizes_have_vitpose_keys(name, embed, depth):
    enc = build_model("reg-s", name, device="meta").backbone
    assert {k: tuple(v.shape) for k, v in enc.state_dict().items()} == reference_vitpose_keys(embed, depth)
    assert enc.grid_size == (16, 12)


def _reference_forward(enc: ViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """Independent re-statement of hmr2_reference.md §1.2 with explicit softmax attention."""
    sd = enc.state_dict()
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16, padding=2)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = x + sd["pos_embed"][:, 1:] + sd["pos_embed"][:, 0:1]
    heads = enc.blocks[0].attn.num_heads
    for i in range(len(enc.blocks)):
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        y = F.layer_norm(x, (c,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = (y @ p("attn.qkv.weight").T + p("attn.qkv.bias")).split(c, dim=-1)
        q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q * (c // heads) ** -0.5 @ k.transpose(-1, -2), dim=-1)
        y = (a @ v).transpose(1, 2).reshape(b, -1, c)
        x = x + y @ p("attn.proj.weight").T + p("attn.proj.bias")
        y = F.layer_norm(x, (c,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        y = F.gelu(y @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        x = x + y @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    x = F.layer_norm(x, (c,), sd["last_norm.weight"], sd["last_norm.bias"], eps=1e-6)
    return x.transpose(1, 2).reshape(b, c, h, w)


def test_tiny_forward_matches_reference_semantics():
    torch.manual_seed(0)
    enc = ViTEncoder(embed_dim=64, depth=2, num_heads=4).eval()
    with torch.no_grad():
        enc.pos_embed.normal_(0, 0.5)               # make the cls-slot broadcast matter
        images = torch.randn(2, 3, 256, 192)
        out = enc(images)
        ref = _reference_forward(enc, images)
    assert out.shape == (2, 64, 16, 12)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the cls slot is added to every token: changing it changes every output token
    with torch.no_grad():
        enc.pos_embed[:, 0] += torch.randn(64)   # (a constant shift would vanish in LayerNorm)
        changed = (enc(images) - out).abs().amax(dim=1)
    assert (changed > 1e-4).all()


def test_patch_padding_leaves_last_two_rows_and_columns_unseen():
    torch.manual_seed(1)
    enc = ViTEncoder(embed_dim=32, depth=1, num_heads=2).eval()
    images = torch.randn(1, 3, 256, 192)
    edited = images.clone()
    edited[..., -2:, :] = 5.0
    edited[..., :, -2:] = -5.0
    first = images.clone()
    first[..., :2, :2] = 5.0
    with torch.no_grad():
        base = enc(images)
        assert torch.equal(enc(edited), base)
        assert not torch.allclose(enc(first), base)


def test_wrong_input_size_is_a_clear_error():
    enc = ViTEncoder(embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 192\)"):
        enc(torch.zeros(1, 3, 224, 224))


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval():
    torch.manual_seed(2)
    model = build_model("def-m", "vit-tiny", depth=1, dim=32, mlp_dim=32, self_heads=2,
                        self_dim_head=8, cross_heads=8, cross_dim_head=4)
    model.train()
    assert not model.backbone.training and model.smpl_head.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    out = model(torch.randn(2, 3, 256, 192))
    (out.pose_6d.square().sum() + out.betas.sum() + out.pred_cam.sum()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.smpl_head.decpose.weight.grad is not None
    model.eval()
    model.train(True)
    assert not model.backbone.training


def test_unfrozen_encoder_trains():
    torch.manual_seed(3)
    model = build_model("reg-s", "vit-tiny", depth=1, dim=32, mlp_dim=32, self_heads=2, self_dim_head=8,
                        cross_heads=2, cross_dim_head=8, freeze_encoder=False)
    model.train()
    assert model.backbone.training
    model(torch.randn(1, 3, 256, 192)).betas.sum().backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
