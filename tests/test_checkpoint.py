"""Checkpoints: safetensors round trip, HMR 2.0 / ViTPose importers, error messages (CPU, seeded).

The HMR 2.0 test writes a Lightning-style ``.ckpt`` with all 576 entries of the reference
(hmr2_reference.md §1.3, §2.4, §5.3, §6.2, §8), names and shapes typed from its tables. To stay
fast, the 503 + 73 tensors that are not the head are stride-0 views of one number each
(``torch.tensor(i).expand(shape)``: torch.save stores one element, the loader sees the full shape,
and the distinct value i proves which file tensor landed in which parameter); the head's 114
tensors are real random tensors, and the imported head's forward is compared with an
independent re-statement of HMR 2.0's head maths (§2.2) computed straight from the file's tensors.
"""
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from deforhmr_model.network import checkpoint as ck
from deforhmr_model.network.checkpoint import (CheckpointError, convert_checkpoint, import_hmr2_checkpoint,
                                       load_model, load_vitpose_backbone, save_checkpoint)
from deforhmr_model.network.encoder import ViTEncoder
from deforhmr_model.network.model import build_model
from deforhmr_model.files.weights import MissingModelFileError

TINY = dict(depth=2, dim=32, mlp_dim=32, self_heads=2, self_dim_head=8, cross_dim_head=4)


def tiny(variant="def-m", seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(variant, "vit-tiny", **{**TINY, **kw})


# ----------------------------------------------------------------------------- safetensors

@pytest.mark.parametrize("variant", ["def-m-pe-abs", "def-m-h8g4o2", "reg-s"])
def test_save_load_round_trip_is_bit_exact(tmp_path, variant):
    model = tiny(variant)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        assert '"variant": "%s"' % variant in f.metadata()["config"]
    back = load_model(path)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert back.config == model.config and not back.training
    assert not any(p.requires_grad for p in back.backbone.parameters())
    assert all(p.requires_grad for p in back.smpl_head.parameters())
    images = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        assert torch.equal(model.eval()(images).pose_6d, back(images).pose_6d)


def test_load_by_name_from_weights_folder(tmp_path, monkeypatch):
    (tmp_path / "deforhmr").mkdir()
    save_checkpoint(tiny("def-s"), tmp_path / "deforhmr" / "my-model.safetensors")
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(tmp_path))
    assert load_model("my-model").config.variant == "def-s"
    with pytest.raises(MissingModelFileError, match="no-such-model.safetensors"):
        load_model("no-such-model")


def test_load_in_bf16(tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors")
    model = load_model(path, dtype=torch.bfloat16)
    assert model.smpl_head.decpose.weight.dtype == torch.bfloat16
    assert model.backbone.pos_embed.dtype == torch.bfloat16
    with torch.no_grad():
        out = model(torch.randn(2, 3, 256, 192))
    assert out.pose_6d.dtype == torch.float32 and torch.isfinite(out.body_pose).all()


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(ck, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny(), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_without_config_names_what_it_looks_like(tmp_path):
    save_file(tiny("def-m-pe-none").state_dict(), str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match=r"def-m-pe-none .*none PE.* on vit-tiny"):
        load_model(tmp_path / "bare.safetensors")


def test_mismatched_file_lists_keys_and_names_the_variant(tmp_path):
    donor = tiny("def-m-h8g4o1", cross_heads=8, groups=4)
    path = save_checkpoint(donor, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as err:
        ck.load_state(tiny("reg-s"), load_model(path).state_dict(), source=str(path))
    msg = str(err.value)
    assert "(reg-s on vit-tiny)" in msg and "looks like def-m-h8g4o{1,2}" in msg
    assert "8 heads / 4 groups" in msg and "25 query tokens" in msg and "deformable" in msg
    assert "12 unexpected: smpl_head.transformer.transformer.layers.0.1.fn.rpe" in msg
    assert "(+7 more)" in msg and "mis-shaped" in msg


# ----------------------------------------------------------------------------- HMR 2.0

def hmr2_reference_entries() -> "OrderedDict[str, tuple]":
    """All 576 state_dict entries of the HMR 2.0 checkpoint per hmr2_reference.md (name -> shape)."""
    e = OrderedDict()
    e["backbone.pos_embed"] = (1, 193, 1280)
    e["backbone.patch_embed.proj.weight"] = (1280, 3, 16, 16)
    e["backbone.patch_embed.proj.bias"] = (1280,)
    for i in range(32):
        b = f"backbone.blocks.{i}."
        for k, s in (("norm1.weight", (1280,)), ("norm1.bias", (1280,)), ("attn.qkv.weight", (3840, 1280)),
                     ("attn.qkv.bias", (3840,)), ("attn.proj.weight", (1280, 1280)), ("attn.proj.bias", (1280,)),
                     ("norm2.weight", (1280,)), ("norm2.bias", (1280,)), ("mlp.fc1.weight", (5120, 1280)),
                     ("mlp.fc1.bias", (5120,)), ("mlp.fc2.weight", (1280, 5120)), ("mlp.fc2.bias", (1280,))):
            e[b + k] = s
    e["backbone.last_norm.weight"] = (1280,)
    e["backbone.last_norm.bias"] = (1280,)
    h = "smpl_head."
    e[h + "init_body_pose"], e[h + "init_betas"], e[h + "init_cam"] = (1, 144), (1, 10), (1, 3)
    e[h + "transformer.pos_embedding"] = (1, 1, 1024)
    e[h + "transformer.to_token_embedding.weight"] = (1024, 1)
    e[h + "transformer.to_token_embedding.bias"] = (1024,)
    for layer in range(6):
        p = f"{h}transformer.transformer.layers.{layer}."
        for k, s in (("0.norm.weight", (1024,)), ("0.norm.bias", (1024,)), ("0.fn.to_qkv.weight", (1536, 1024)),
                     ("0.fn.to_out.0.weight", (1024, 512)), ("0.fn.to_out.0.bias", (1024,)),
                     ("1.norm.weight", (1024,)), ("1.norm.bias", (1024,)), ("1.fn.to_kv.weight", (1024, 1280)),
                     ("1.fn.to_q.weight", (512, 1024)), ("1.fn.to_out.0.weight", (1024, 512)),
                     ("1.fn.to_out.0.bias", (1024,)), ("2.norm.weight", (1024,)), ("2.norm.bias", (1024,)),
                     ("2.fn.net.0.weight", (1024, 1024)), ("2.fn.net.0.bias", (1024,)),
                     ("2.fn.net.3.weight", (1024, 1024)), ("2.fn.net.3.bias", (1024,))):
            e[p + k] = s
    for k, s in (("decpose", 144), ("decshape", 10), ("deccam", 3)):
        e[f"{h}{k}.weight"], e[f"{h}{k}.bias"] = (s, 1024), (s,)
    d = "discriminator."
    e[d + "D_conv1.weight"], e[d + "D_conv1.bias"] = (32, 9, 1, 1), (32,)
    e[d + "D_conv2.weight"], e[d + "D_conv2.bias"] = (32, 32, 1, 1), (32,)
    for j in range(23):
        e[f"{d}pose_out.{j}.weight"], e[f"{d}pose_out.{j}.bias"] = (1, 32), (1,)
    for k, s in (("betas_fc1", (10, 10)), ("betas_fc2", (5, 10)), ("betas_out", (1, 5)),
                 ("D_alljoints_fc1", (1024, 736)), ("D_alljoints_fc2", (1024, 1024)), ("D_alljoints_out", (1, 1024))):
        e[f"{d}{k}.weight"], e[f"{d}{k}.bias"] = s, (s[0],)
    for k, s in (("shapedirs", (6890, 3, 10)), ("faces_tensor", (13776, 3)), ("v_template", (6890, 3)),
                 ("J_regressor", (24, 6890)), ("posedirs", (207, 20670)), ("parents", (24,)),
                 ("lbs_weights", (6890, 24)), ("joint_regressor_extra", (19, 6890)), ("joint_map", (25,)),
                 ("vertex_joint_selector.extra_joints_idxs", (21,))):
        e["smpl." + k] = s
    e["initialized"] = ()
    return e


INT_KEYS = ("smpl.faces_tensor", "smpl.parents", "smpl.joint_map", "smpl.vertex_joint_selector.extra_joints_idxs")


def _fake_yacs(monkeypatch):
    """A stand-in ``yacs.config.CfgNode`` (a dict subclass with attributes, like yacs') for pickling."""
    mod = types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__["__immutable__"] = False
    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    mod.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", mod)
    return CfgNode


def _hmr2_head_forward(sd, context):
    """HMR 2.0's head (hmr2_reference.md §2.2) from the checkpoint's tensors, written out."""
    p = lambda k: sd["smpl_head." + k]  # noqa: E731
    b = context.shape[0]
    ctx = context.flatten(2).transpose(1, 2)                          # (B, 192, 1280)

    def mha(q, k, v):
        q, k, v = (t.reshape(b, -1, 8, 64).transpose(1, 2) for t in (q, k, v))
        return (torch.softmax(q @ k.transpose(-1, -2) * 0.125, -1) @ v).transpose(1, 2).reshape(b, -1, 512)

    x = F.linear(torch.zeros(b, 1, 1), p("transformer.to_token_embedding.weight"),
                 p("transformer.to_token_embedding.bias")) + p("transformer.pos_embedding")
    for layer in range(6):
        L = lambda k: p(f"transformer.transformer.layers.{layer}.{k}")  # noqa: E731
        y = F.layer_norm(x, (1024,), L("0.norm.weight"), L("0.norm.bias"), eps=1e-5)
        q, k, v = (y @ L("0.fn.to_qkv.weight").T).chunk(3, -1)
        x = x + F.linear(mha(q, k, v), L("0.fn.to_out.0.weight"), L("0.fn.to_out.0.bias"))
        y = F.layer_norm(x, (1024,), L("1.norm.weight"), L("1.norm.bias"), eps=1e-5)
        k, v = (ctx @ L("1.fn.to_kv.weight").T).chunk(2, -1)
        x = x + F.linear(mha(y @ L("1.fn.to_q.weight").T, k, v), L("1.fn.to_out.0.weight"), L("1.fn.to_out.0.bias"))
        y = F.layer_norm(x, (1024,), L("2.norm.weight"), L("2.norm.bias"), eps=1e-5)
        y = F.linear(F.gelu(F.linear(y, L("2.fn.net.0.weight"), L("2.fn.net.0.bias"))),
                     L("2.fn.net.3.weight"), L("2.fn.net.3.bias"))
        x = x + y
    tok = x[:, 0]
    return (F.linear(tok, p("decpose.weight"), p("decpose.bias")) + p("init_body_pose"),
            F.linear(tok, p("decshape.weight"), p("decshape.bias")) + p("init_betas"),
            F.linear(tok, p("deccam.weight"), p("deccam.bias")) + p("init_cam"))


def test_hmr2_checkpoint_import_consumes_every_reference_entry(tmp_path, monkeypatch):
    entries = hmr2_reference_entries()
    assert len(entries) == 576
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    for i, (key, shape) in enumerate(entries.items()):
        if key.startswith("smpl_head."):
            sd[key] = torch.randn(shape, generator=gen) * 0.02
        elif key == "initialized":
            sd[key] = torch.tensor(True)
        elif key in INT_KEYS:
            sd[key] = torch.tensor(i).expand(shape)
        else:
            sd[key] = torch.tensor(float(i)).expand(shape)
    CfgNode = _fake_yacs(monkeypatch)
    cfg = CfgNode({"MODEL": CfgNode({"SMPL_HEAD": CfgNode({"TYPE": "transformer_decoder"})})})
    path = tmp_path / "epoch=35-step=1000000.ckpt"
    torch.save({"epoch": 35, "global_step": 1_000_000, "pytorch-lightning_version": "1.8.1",
                "state_dict": sd, "hyper_parameters": {"cfg": cfg}, "optimizer_states": [],
                "lr_schedulers": [], "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(1.0)}}},
               path)
    monkeypatch.delitem(sys.modules, "yacs.config")                   # the loader must not need yacs

    model = import_hmr2_checkpoint(path)
    assert (model.config.variant, model.config.backbone) == ("reg-s", "vit-h")
    msd = model.state_dict()
    network = [k for k in entries if k.startswith(("backbone.", "smpl_head."))]
    assert sorted(msd) == sorted(network) and len(network) == 389 + 114
    index = {k: i for i, k in enumerate(entries)}
    for key in network:
        assert tuple(msd[key].shape) == entries[key], key
        if key.startswith("backbone."):
            assert msd[key].reshape(-1)[0].item() == float(index[key]), key
        else:
            assert torch.equal(msd[key], sd[key]), key
    assert not any(p.requires_grad for p in model.backbone.parameters())

    context = torch.randn(2, 1280, 16, 12, generator=gen)
    with torch.no_grad():
        out = model.forward_head(context)
        pose, betas, cam = _hmr2_head_forward(sd, context)
    torch.testing.assert_close(out.pose_6d.reshape(2, 144), pose, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.betas, betas, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.pred_cam, cam, atol=1e-5, rtol=1e-4)


def test_hmr2_importer_rejects_a_deforhmr_file_naming_it(tmp_path):
    torch.save({"state_dict": tiny("def-m").state_dict()}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=r"does not fit the model \(reg-s on vit-tiny\).*looks like def-m "):
        import_hmr2_checkpoint(tmp_path / "x.ckpt")


def test_convert_hmr2_style_ckpt_to_safetensors(tmp_path):
    src = build_model("reg-s", "vit-tiny")                            # HMR 2.0 head on a tiny ViT
    sd = {**src.state_dict(), "smpl.v_template": torch.zeros(6890, 3), "initialized": torch.tensor(True)}
    torch.save({"state_dict": sd}, tmp_path / "hmr2.ckpt")
    dst = convert_checkpoint(tmp_path / "hmr2.ckpt", tmp_path / "hmr2.safetensors")
    back = load_model(dst)
    assert back.config.variant == "reg-s"
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in src.state_dict().items())


# ----------------------------------------------------------------------------- ViTPose

def _mmpose_pth(backbone_sd: dict, path, moe_split: int | None = None):
    """An mmpose-style ViTPose .pth: backbone.* + keypoint_head.*, meta (with numpy) and optimizer."""
    sd = OrderedDict()
    for k, v in backbone_sd.items():
        if moe_split is not None and k.endswith("mlp.fc2.weight"):
            sd["backbone." + k] = v[:moe_split].clone()
            for e in range(3):
                sd["backbone." + k.replace("fc2", f"experts.{e}")] = (v[moe_split:] + e).clone()
        elif moe_split is not None and k.endswith("mlp.fc2.bias"):
            sd["backbone." + k] = v[:moe_split].clone()
            for e in range(3):
                sd["backbone." + k.replace("fc2", f"experts.{e}")] = (v[moe_split:] + e).clone()
        else:
            sd["backbone." + k] = v
    c = backbone_sd["pos_embed"].shape[-1]
    sd["keypoint_head.deconv_layers.0.weight"] = torch.randn(c, 256, 4, 4)
    sd["keypoint_head.deconv_layers.1.running_mean"] = torch.zeros(256)
    sd["keypoint_head.deconv_layers.1.num_batches_tracked"] = torch.tensor(0)
    sd["keypoint_head.final_layer.weight"] = torch.randn(17, 256, 1, 1)
    meta = {"mmcv_version": "1.3.9", "epoch": 210, "hook_msgs": {"best_score": np.float64(0.781)}}
    torch.save({"meta": meta, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}, path)


def test_vitpose_pth_loads_backbone_and_drops_heads(tmp_path):
    vitpose = ViTEncoder(embed_dim=64, depth=2, num_heads=4)
    _mmpose_pth(vitpose.state_dict(), tmp_path / "vitpose.pth")
    model = tiny("def-m")
    assert load_vitpose_backbone(model, tmp_path / "vitpose.pth") is model
    for k, v in vitpose.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    assert not model.backbone.pos_embed.requires_grad


def test_vitpose_plus_moe_fc2_is_concatenated_with_the_chosen_expert(tmp_path):
    vitpose = ViTEncoder(embed_dim=64, depth=2, num_heads=4)
    _mmpose_pth(vitpose.state_dict(), tmp_path / "vitpose_plus.pth", moe_split=48)
    model = tiny("reg-m")
    load_vitpose_backbone(model, tmp_path / "vitpose_plus.pth", expert=1)
    got, ref = model.backbone.state_dict(), vitpose.state_dict()
    for i in range(2):
        k = f"blocks.{i}.mlp.fc2."
        torch.testing.assert_close(got[k + "weight"][:48], ref[k + "weight"][:48])
        torch.testing.assert_close(got[k + "weight"][48:], ref[k + "weight"][48:] + 1)   # expert 1
        torch.testing.assert_close(got[k + "bias"][48:], ref[k + "bias"][48:] + 1)
    with pytest.raises(CheckpointError, match="expert 5"):
        load_vitpose_backbone(model, tmp_path / "vitpose_plus.pth", expert=5)


def test_bare_backbone_state_dict_loads(tmp_path):
    vitpose = ViTEncoder(embed_dim=64, depth=2, num_heads=4)
    torch.save({"state_dict": vitpose.state_dict()}, tmp_path / "vitpose_backbone.pth")
    model = load_vitpose_backbone(tiny("def-s"), tmp_path / "vitpose_backbone.pth")
    assert torch.equal(model.backbone.last_norm.weight, vitpose.last_norm.weight)


def test_vitpose_of_another_size_is_rejected_naming_it(tmp_path):
    _mmpose_pth(ViTEncoder(embed_dim=64, depth=3, num_heads=4).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"bare ViT backbone state dict \(a ViT \(embed 64, 3 blocks\)\)"):
        load_vitpose_backbone(tiny("def-m"), tmp_path / "other.pth")


def test_convert_vitpose_needs_a_variant_and_builds_one(tmp_path):
    vitpose = ViTEncoder(embed_dim=64, depth=2, num_heads=4)
    _mmpose_pth(vitpose.state_dict(), tmp_path / "vitpose.pth")
    with pytest.raises(CheckpointError, match="pass a variant"):
        convert_checkpoint(tmp_path / "vitpose.pth", tmp_path / "x.safetensors")
    dst = convert_checkpoint(tmp_path / "vitpose.pth", tmp_path / "x.safetensors", variant="def-m-h8g4o2",
                             dtype=torch.bfloat16)
    back = load_model(dst)
    assert (back.config.variant, back.config.backbone) == ("def-m-h8g4o2", "vit-tiny")
    assert back.backbone.pos_embed.dtype == torch.bfloat16
    torch.testing.assert_close(back.backbone.pos_embed.float(), vitpose.pos_embed.detach().bfloat16().float())


def test_unreadable_files_are_checkpoint_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match=r"not a readable torch model file \(UnpicklingError: .*\)\.$"):
        load_vitpose_backbone(tiny(), tmp_path / "junk.pth")
    with pytest.raises(MissingModelFileError):
        convert_checkpoint(tmp_path / "absent.ckpt", tmp_path / "y.safetensors")
