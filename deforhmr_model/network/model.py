"""DeforHMR = frozen ViTPose encoder + SMPL transformer decoder (paper §3, Fig. 2).

``build_model(variant, backbone, **overrides)`` is the one builder that reads a
:class:`~deforhmr_model.network.configs.ModelConfig`; ``checkpoint.load_model`` rebuilds a
model from a safetensors file. Input: ImageNet-normalised RGB crops
(``people.crop``: ``IMAGE_MEAN``/``IMAGE_STD``, ``crop_person``). The module tree is HMR
2.0's (``backbone.*``, ``smpl_head.*``), so ``reg-s`` on ``vit-h`` loads the public HMR 2.0
checkpoint with a key filter.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from deforhmr_model.network.configs import DecoderConfig, ModelConfig, make_config
from deforhmr_model.network.decoder import SMPLHead
from deforhmr_model.network.deformable_attention import AttentionMaps, CrossAttention, DeformableCrossAttention
from deforhmr_model.network.encoder import ViTEncoder
from deforhmr_model.geometry.rotation import rot6d_to_rotmat

__all__ = ["DeforHMR", "HMROutput", "AttentionMaps", "build_model", "build_from_config", "build_head",
           "CROSS_ATTENTION"]


@dataclass
class HMROutput:
    """Network output per crop (all float32, on the model's device).

    global_orient: (B, 3, 3) rotation, SMPL body frame -> crop camera frame (OpenCV axes).
    body_pose: (B, 23, 3, 3) parent-relative rotations of SMPL joints 1..23.
    betas: (B, 10) SMPL shape coefficients.
    pred_cam: (B, 3) weak-perspective (s, tx, ty), HMR 2.0 convention (normalised crop units;
        ``camera.cam_crop_to_full`` turns it into a translation in metres).
    pose_6d: (B, 24, 6) the same rotations in the 6D column-pair layout (``rotation``).
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    pred_cam: torch.Tensor
    pose_6d: torch.Tensor


class DeforHMR(nn.Module):
    """Encoder ``backbone`` (ViTPose ViT) + decoder/heads ``smpl_head``.

    The encoder is frozen (no gradients, run under ``torch.no_grad``) and kept in eval mode by
    :meth:`train` when ``config.freeze_encoder`` is set (paper §3.1).
    """

    def __init__(self, config: ModelConfig, backbone: ViTEncoder, smpl_head: SMPLHead):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.smpl_head = smpl_head
        if config.freeze_encoder:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def forward(self, images: torch.Tensor) -> HMROutput:
        """images (B, 3, 256, 192) float, ImageNet-normalised RGB -> :class:`HMROutput`.

        A (B, 3, 256, 256) HMR 2.0 square crop is accepted too and trimmed to columns 32:224,
        as HMR 2.0 does. Raises ValueError for any other shape.
        """
        return self.forward_head(self.forward_features(images))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images -> context (B, C, 16, 12) in the model's dtype."""
        h, w = self.backbone.img_size
        if images.ndim == 4 and images.shape[-2:] == (h, h) and h > w:
            images = images[..., (h - w) // 2:(h + w) // 2]
        images = images.to(self.backbone.pos_embed.dtype)
        if self.config.freeze_encoder:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward_head(self, context: torch.Tensor) -> HMROutput:
        """context (B, C, 16, 12) -> :class:`HMROutput` (use with cached encoder features)."""
        return _to_output(self.smpl_head(context))

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[AttentionMaps]:
        """Per decoder layer: sampling positions P (B, G, Hk, Wk, 2), normalised (x, y), and
        attention weights (B, heads, Q, N) (paper Fig. 1, 5); see :class:`AttentionMaps`."""
        return self.smpl_head(self.forward_features(images), need_weights=True).attention

    def train(self, mode: bool = True) -> "DeforHMR":
        super().train(mode)
        if self.config.freeze_encoder:
            self.backbone.eval()
        return self

    @torch.no_grad()
    def set_mean_params(self, pose_6d: torch.Tensor, betas: torch.Tensor, cam: torch.Tensor) -> None:
        """Replace the IEF starting point: pose_6d (144,) or (24, 6), betas (10,), cam (3,)
        (e.g. HMR 2.0's ``smpl_mean_params.npz`` ``pose``, ``shape``, ``cam``)."""
        head = self.smpl_head
        for buf, val in ((head.init_body_pose, pose_6d), (head.init_betas, betas), (head.init_cam, cam)):
            val = torch.as_tensor(val)
            if val.numel() != buf.numel():
                raise ValueError(f"mean parameter needs {buf.numel()} values, got {tuple(val.shape)}")
            buf.copy_(val.reshape(buf.shape))


def _to_output(raw) -> HMROutput:
    rotmats = rot6d_to_rotmat(raw.pose_6d)                            # (B, 24, 3, 3)
    return HMROutput(global_orient=rotmats[:, 0], body_pose=rotmats[:, 1:], betas=raw.betas,
                     pred_cam=raw.pred_cam, pose_6d=raw.pose_6d)


def build_model(variant: str = "def-m", backbone: str = "vit-h", device=None, **overrides) -> DeforHMR:
    """Build a named variant (``configs.VARIANTS``) on a named backbone (``configs.BACKBONES``).

    Args:
        variant: e.g. "def-m" (DeforHMR), "reg-s" (HMR 2.0 layout).
        backbone: "vit-h" (paper), "vit-l", "vit-b", "vit-s", "vit-tiny".
        device: where to allocate (``"meta"`` builds without memory, for shapes/counts).
        **overrides: see :func:`deforhmr_model.network.configs.make_config`.
    Returns:
        A randomly initialised :class:`DeforHMR` (train mode, encoder frozen in eval mode).
    Raises:
        ValueError: unknown names or inconsistent overrides.
    """
    return build_from_config(make_config(variant, backbone, **overrides), device=device)


def build_from_config(config: ModelConfig, device=None) -> DeforHMR:
    """The single place that turns a :class:`ModelConfig` into modules."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        encoder = ViTEncoder(**dataclasses.asdict(config.encoder))
        head = build_head(config.decoder, config.encoder.embed_dim, encoder.grid_size)
        return DeforHMR(config, encoder, head)


def _regular(d: DecoderConfig, context_dim: int, context_size: tuple[int, int]):
    return lambda: CrossAttention(d.dim, context_dim, d.cross_heads, d.cross_dim_head, d.dropout)


def _deformable(d: DecoderConfig, context_dim: int, context_size: tuple[int, int]):
    return lambda: DeformableCrossAttention(
        d.dim, context_dim, context_size, d.num_queries, d.cross_heads, d.cross_dim_head,
        d.groups, d.offset_range, d.offset_kernel, d.offset_stride, d.pe, d.dropout)


#: ``DecoderConfig.cross_attention`` -> (config, context_dim, context_size) -> per-layer factory.
CROSS_ATTENTION = {"regular": _regular, "deformable": _deformable}


def build_head(decoder: DecoderConfig, context_dim: int, context_size: tuple[int, int]) -> SMPLHead:
    """The decoder + SMPL heads of ``decoder`` over a (context_dim, *context_size) context map;
    the cross-attention kind is chosen here, once (:data:`CROSS_ATTENTION`).

    Raises:
        ValueError: an unknown ``cross_attention``.
    """
    if decoder.cross_attention not in CROSS_ATTENTION:
        raise ValueError(f"cross_attention {decoder.cross_attention!r}: expected one of {sorted(CROSS_ATTENTION)}")
    make_cross = CROSS_ATTENTION[decoder.cross_attention](decoder, context_dim, context_size)
    d = decoder
    return SMPLHead(make_cross, num_queries=d.num_queries, dim=d.dim, depth=d.depth,
                    self_heads=d.self_heads, self_dim_head=d.self_dim_head, mlp_dim=d.mlp_dim,
                    norm_eps=d.norm_eps, dropout=d.dropout)
