"""Named model variants and backbones as data (paper Tables 2-4; ``hmr2_reference.md`` §1, §2).

Variants fix the decoder's architecture numbers only; weight facts (files, sha256,
licences) live in ``deforhmr_model/weights/manifest.json``. :func:`make_config` is the one place that
turns a variant name, a backbone name and keyword overrides into a frozen
:class:`ModelConfig`; the builders in ``encoder``/``decoder``/``model`` receive plain
keywords from it.

Variants (decoder = HMR 2.0's pre-norm transformer decoder, depth 6, D = 1024,
FFN 1024, self-attention 8 heads x 64, unless a row says otherwise):

==================  =======  =============  =====  ======  ==  ========
name                queries  cross-attn     heads  groups  λo  PE
==================  =======  =============  =====  ======  ==  ========
reg-s               1        regular        8      -       -   none      (= HMR 2.0, weight-compatible)
reg-m               25       regular        8      -       -   none
def-s               1        deformable     16     8       1   relative
def-m               25       deformable     16     8       1   relative  (= DeforHMR)
def-m-h16g8o1       = def-m                                               (Table 3 row 1)
def-m-h16g8o2       25       deformable     16     8       2   relative  (Table 3 row 2)
def-m-h8g4o1        25       deformable     8      4       1   relative  (Table 3 row 3)
def-m-h8g4o2        25       deformable     8      4       2   relative  (Table 3 row 4)
def-m-pe-none       25       deformable     16     8       1   none      (Table 4)
def-m-pe-abs        25       deformable     16     8       1   absolute  (Table 4)
def-m-pe-rel        = def-m                                               (Table 4)
==================  =======  =============  =====  ======  ==  ========

Backbones (ViTPose ViT, 256x192 input, patch 16 with 2-px padding, 16x12 tokens):
``vit-h`` (1280, 32 blocks, 16 heads; the paper's and HMR 2.0's), ``vit-l`` (1024, 24, 16),
``vit-b`` (768, 12, 12), ``vit-s`` (384, 12, 12) and ``vit-tiny`` (64, 2, 4; for tests only,
no pretrained weights exist).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

CROSS_ATTENTION_TYPES = ("regular", "deformable")
PE_TYPES = ("none", "absolute", "relative")


@dataclass(frozen=True)
class EncoderConfig:
    """ViTPose ViT hyper-parameters (``hmr2_reference.md`` §1.1)."""

    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    img_size: tuple[int, int] = (256, 192)   # (H, W) pixels
    patch_size: int = 16
    patch_padding: int = 2                   # ViTPose: 4 + 2 * (ratio // 2 - 1) with ratio 1
    qkv_bias: bool = True
    norm_eps: float = 1e-6

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid (H, W) = (16, 12) for 256x192 (``hmr2_reference.md`` §1.1)."""
        h, w = self.img_size
        p, pad = self.patch_size, self.patch_padding
        return (h + 2 * pad - p) // p + 1, (w + 2 * pad - p) // p + 1


@dataclass(frozen=True)
class DecoderConfig:
    """Transformer decoder + SMPL heads (paper §3.2; HMR 2.0 head, ``hmr2_reference.md`` §2.1)."""

    num_queries: int = 25             # 25 = 24 pose + 1 shape token; 1 = HMR 2.0 single token
    cross_attention: str = "deformable"
    dim: int = 1024                   # token width D
    depth: int = 6                    # decoder layers L
    self_heads: int = 8
    self_dim_head: int = 64
    cross_heads: int = 16
    cross_dim_head: int = 64
    mlp_dim: int = 1024
    groups: int = 8                   # offset groups G (deformable only)
    offset_range: float = 1.0         # λo (deformable only)
    offset_kernel: int = 5            # depthwise conv kernel of the offset net
    offset_stride: int = 1            # r: key grid = context grid / r
    pe: str = "relative"              # none | absolute | relative (deformable only)
    norm_eps: float = 1e-5
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`~deforhmr_model.network.model.DeforHMR`; JSON-able."""

    variant: str = "def-m"
    backbone: str = "vit-h"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    freeze_encoder: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Inverse of :meth:`to_json`. Raises ValueError on unknown or malformed fields."""
        try:
            d = json.loads(text)
            enc = dict(d.pop("encoder"))
            enc["img_size"] = tuple(enc["img_size"])
            return cls(encoder=EncoderConfig(**enc), decoder=DecoderConfig(**d.pop("decoder")), **d)
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ValueError(f"not a DeforHMR model config: {e}") from None


_REG = dict(cross_attention="regular", cross_heads=8, pe="none")
_DEF = dict(cross_attention="deformable", cross_heads=16, groups=8, offset_range=1.0, pe="relative")

VARIANTS: dict[str, dict[str, Any]] = {
    "reg-s": dict(_REG, num_queries=1),
    "reg-m": dict(_REG, num_queries=25),
    "def-s": dict(_DEF, num_queries=1),
    "def-m": dict(_DEF, num_queries=25),
    "def-m-h16g8o1": dict(_DEF, num_queries=25),
    "def-m-h16g8o2": dict(_DEF, num_queries=25, offset_range=2.0),
    "def-m-h8g4o1": dict(_DEF, num_queries=25, cross_heads=8, groups=4),
    "def-m-h8g4o2": dict(_DEF, num_queries=25, cross_heads=8, groups=4, offset_range=2.0),
    "def-m-pe-none": dict(_DEF, num_queries=25, pe="none"),
    "def-m-pe-abs": dict(_DEF, num_queries=25, pe="absolute"),
    "def-m-pe-rel": dict(_DEF, num_queries=25),
}

BACKBONES: dict[str, dict[str, Any]] = {
    "vit-h": dict(embed_dim=1280, depth=32, num_heads=16),
    "vit-l": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit-b": dict(embed_dim=768, depth=12, num_heads=12),
    "vit-s": dict(embed_dim=384, depth=12, num_heads=12),
    "vit-tiny": dict(embed_dim=64, depth=2, num_heads=4),
}

_DECODER_FIELDS = tuple(f.name for f in fields(DecoderConfig))
_ENCODER_FIELDS = tuple("encoder_" + f.name for f in fields(EncoderConfig))
OVERRIDE_NAMES = (*_DECODER_FIELDS, *_ENCODER_FIELDS, "freeze_encoder")


def make_config(variant: str = "def-m", backbone: str = "vit-h", **overrides: Any) -> ModelConfig:
    """The config of a named variant on a named backbone, with keyword overrides.

    Args:
        variant: a key of :data:`VARIANTS`.
        backbone: a key of :data:`BACKBONES`.
        **overrides: decoder fields by name (``depth=2``, ``dim=64``, ...), encoder fields
            prefixed ``encoder_`` (``encoder_depth=1``), or ``freeze_encoder``.
    Raises:
        ValueError: unknown variant/backbone/override, or an inconsistent combination
            (e.g. heads not divisible by groups), with the accepted values.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    unknown = sorted(set(overrides) - set(OVERRIDE_NAMES))
    if unknown:
        raise ValueError(f"unknown model override(s) {unknown}; accepted: {list(OVERRIDE_NAMES)}")
    dec = {k: v for k, v in overrides.items() if k in _DECODER_FIELDS}
    enc = {k[len("encoder_"):]: v for k, v in overrides.items() if k in _ENCODER_FIELDS}
    if "img_size" in enc:
        enc["img_size"] = tuple(enc["img_size"])
    cfg = ModelConfig(
        variant=variant,
        backbone=backbone,
        encoder=EncoderConfig(**{**BACKBONES[backbone], **enc}),
        decoder=DecoderConfig(**{**VARIANTS[variant], **dec}),
        freeze_encoder=overrides.get("freeze_encoder", True),
    )
    validate_config(cfg)
    return cfg


def validate_config(cfg: ModelConfig) -> None:
    """Raise ValueError naming the first inconsistency in ``cfg``."""
    e, d = cfg.encoder, cfg.decoder
    checks = [
        (e.embed_dim % e.num_heads == 0, f"encoder embed_dim {e.embed_dim} must be divisible by num_heads {e.num_heads}"),
        (d.num_queries in (1, 25), f"num_queries must be 1 (single query) or 25 (24 pose + 1 shape), got {d.num_queries}"),
        (d.cross_attention in CROSS_ATTENTION_TYPES, f"cross_attention must be one of {CROSS_ATTENTION_TYPES}, got {d.cross_attention!r}"),
        (d.pe in PE_TYPES, f"pe must be one of {PE_TYPES}, got {d.pe!r}"),
        (d.cross_attention == "deformable" or d.pe == "none", "positional encodings (pe) apply to deformable cross-attention only; use pe='none' with regular"),
        (d.depth >= 1 and d.dim >= 1, "decoder depth and dim must be positive"),
    ]
    if d.cross_attention == "deformable":
        checks += [
            (d.cross_heads % d.groups == 0, f"cross_heads {d.cross_heads} must be divisible by groups {d.groups}"),
            (e.embed_dim % d.groups == 0, f"encoder embed_dim {e.embed_dim} must be divisible by groups {d.groups}"),
            (d.offset_range > 0, f"offset_range must be > 0, got {d.offset_range}"),
            (d.offset_stride >= 1 and d.offset_kernel % 2 == 1, "offset_stride must be >= 1 and offset_kernel odd"),
        ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"invalid model config ({cfg.variant}, {cfg.backbone}): {msg}")

