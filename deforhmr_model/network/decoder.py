"""DeforHMR's SMPL transformer decoder and heads (paper §3.2.1-3.2.2), laid out as HMR 2.0's
``SMPLTransformerDecoderHead`` (``hmr2_reference.md`` §2) so that the ``reg-s`` variant's
state_dict keys are HMR 2.0's ``smpl_head.*`` keys, weight for weight.

Module tree (keys under ``smpl_head.``)::

    init_body_pose (1, 144), init_betas (1, 10), init_cam (1, 3)      buffers: mean parameters
    transformer.to_token_embedding   Linear(1 -> D)   applied to a zero token (HMR 2.0 "zero" input)
    transformer.pos_embedding        (1, Q, D)        the learned query tokens t (paper: 25 x 1024)
    transformer.transformer.layers.{l}.0  PreNorm(LN, SelfAttention)    to_qkv (no bias), to_out.0
    transformer.transformer.layers.{l}.1  PreNorm(LN, CrossAttention | DeformableCrossAttention)
    transformer.transformer.layers.{l}.2  PreNorm(LN, FeedForward)      net.0, GELU, net.3
    decpose, decshape, deccam        linear readouts

Choices (the paper is silent or leaves them open; documented here):

* Layer: pre-norm residual, self-attention -> cross-attention -> 2-layer FFN (paper §3.2.2
  writes the residuals; the norms follow HMR 2.0): LN on the tokens only, the context is not
  normalised in the head, no final LN. Depth 6, D = 1024, FFN 1024, self-attention 8 heads x 64
  (HMR 2.0's decoder), exact GELU, LN eps 1e-5.
* Query tokens: Q = 25 (24 pose tokens, joint j = SMPL joint j with 0 = global orient, then one
  shape token) or Q = 1. Token q = to_token_embedding(0) + pos_embedding[q], which for Q = 1 is
  exactly HMR 2.0's zero-token input.
* Readout, multi-query: W_pose = ``decpose`` Linear(D -> 6) shared by the 24 pose tokens (token j
  -> 6D of joint j); W_shape = ``decshape`` Linear(D -> 10) and the camera ``deccam`` Linear(D -> 3)
  both read the shape token. Single query: decpose (D -> 144), decshape, deccam from the token.
* One round of iterative error feedback (paper §3.2.1, HMR 2.0 IEF_ITERS = 1): prediction =
  readout + mean parameters. Mean parameters are buffers saved in checkpoints; without a
  checkpoint they default to global orient = 180° about x (6D [1,0,0, 0,-1,0]: people upright in
  the OpenCV camera, HMR 2.0's convention), identity body pose (6D [1,0,0, 0,1,0]), zero betas
  and the weak-perspective camera (s, tx, ty) = (0.9, 0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from deforhmr_model.body.smpl_io import NUM_BETAS, NUM_JOINTS
from deforhmr_model.network.deformable_attention import AttentionMaps, split_heads, merge_heads

DEFAULT_CAM = (0.9, 0.0, 0.0)


def default_mean_pose_6d() -> torch.Tensor:
    """(144,) 6D mean pose: joint 0 = 180° about x (upright in the OpenCV camera), others identity."""
    pose = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).repeat(NUM_JOINTS)
    pose[4] = -1.0
    return pose


@dataclass
class HeadOutput:
    """Raw decoder readout. pose_6d (B, 24, 6), betas (B, 10), pred_cam (B, 3), all float32;
    attention: one :class:`AttentionMaps` per decoder layer, or None when not requested."""

    pose_6d: torch.Tensor
    betas: torch.Tensor
    pred_cam: torch.Tensor
    attention: list[AttentionMaps] | None = None


class SMPLHead(nn.Module):
    """Query tokens -> transformer decoder over the context -> SMPL pose/shape + camera.

    Args:
        make_cross: builds one layer's cross-attention module (called once per layer), chosen
            from the config by the builder (:func:`deforhmr_model.network.model.build_head`):
            ``forward(x (B, Q, D), context (B, C, H, W), need_weights) -> (y, AttentionMaps|None)``.
        num_queries: 1 or 25. dim, depth, self_heads, self_dim_head, mlp_dim, norm_eps,
        dropout: decoder sizes.
    """

    def __init__(self, make_cross: Callable[[], nn.Module], num_queries: int = 25, dim: int = 1024,
                 depth: int = 6, self_heads: int = 8, self_dim_head: int = 64, mlp_dim: int = 1024,
                 norm_eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        self.num_queries = num_queries
        self.transformer = TokenDecoder(num_queries, dim, depth, self_heads, self_dim_head,
                                        mlp_dim, norm_eps, dropout, make_cross)
        pose_out = 6 if num_queries > 1 else 6 * NUM_JOINTS
        self.decpose = nn.Linear(dim, pose_out)
        self.decshape = nn.Linear(dim, NUM_BETAS)
        self.deccam = nn.Linear(dim, 3)
        self.register_buffer("init_body_pose", default_mean_pose_6d()[None])
        self.register_buffer("init_betas", torch.zeros(1, NUM_BETAS))
        self.register_buffer("init_cam", torch.tensor([DEFAULT_CAM]))

    def forward(self, context: torch.Tensor, need_weights: bool = False) -> HeadOutput:
        """context (B, C, H, W) -> :class:`HeadOutput` (float32 outputs)."""
        tokens, maps = self.transformer(context, need_weights)        # (B, Q, D)
        b = tokens.shape[0]
        if self.num_queries > 1:
            pose = self.decpose(tokens[:, :NUM_JOINTS]).float()        # (B, 24, 6)
            shape_token = tokens[:, NUM_JOINTS]
        else:
            pose = self.decpose(tokens[:, 0]).float().reshape(b, NUM_JOINTS, 6)
            shape_token = tokens[:, 0]
        return HeadOutput(
            pose_6d=pose + self.init_body_pose.float().reshape(1, NUM_JOINTS, 6),
            betas=self.decshape(shape_token).float() + self.init_betas.float(),
            pred_cam=self.deccam(shape_token).float() + self.init_cam.float(),
            attention=maps,
        )


class TokenDecoder(nn.Module):
    """HMR 2.0's ``TransformerDecoder`` wrapper: zero token -> embedding + learned query tokens."""

    def __init__(self, num_queries: int, dim: int, depth: int, heads: int, dim_head: int,
                 mlp_dim: int, norm_eps: float, dropout: float, make_cross):
        super().__init__()
        self.to_token_embedding = nn.Linear(1, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_queries, dim))
        self.transformer = DecoderLayers(dim, depth, heads, dim_head, mlp_dim, norm_eps, dropout, make_cross)

    def forward(self, context: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, list[AttentionMaps] | None]:
        b = context.shape[0]
        zeros = context.new_zeros(b, self.pos_embedding.shape[1], 1)
        x = self.to_token_embedding(zeros) + self.pos_embedding       # (B, Q, D)
        return self.transformer(x, context, need_weights)


class DecoderLayers(nn.Module):
    """L pre-norm layers of self-attention, cross-attention and FFN, each with a residual."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int,
                 norm_eps: float, dropout: float, make_cross):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PreNorm(dim, SelfAttention(dim, heads, dim_head, dropout), norm_eps),
                PreNorm(dim, make_cross(), norm_eps),
                PreNorm(dim, FeedForward(dim, mlp_dim, dropout), norm_eps),
            ]) for _ in range(depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, list[AttentionMaps] | None]:
        maps: list[AttentionMaps] = []
        for self_attn, cross_attn, ffn in self.layers:
            x = x + self_attn.fn(self_attn.norm(x))                   # Y1 = SelfAttn(Y) + Y
            y, m = cross_attn.fn(cross_attn.norm(x), context, need_weights)
            x = x + y                                                  # Y2 = A V + Y1
            x = x + ffn.fn(ffn.norm(x))                                # Y = FFN(Y2) + Y2
            maps.append(m)
        return x, (maps if need_weights else None)


class PreNorm(nn.Module):
    """Holder of ``norm`` (LayerNorm over D) and ``fn``; the decoder applies fn(norm(x))."""

    def __init__(self, dim: int, fn: nn.Module, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn


class SelfAttention(nn.Module):
    """``to_qkv`` Linear(D -> 3*heads*dim_head, no bias; q, k, v order), ``to_out.0`` Linear(-> D)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(x).chunk(3, dim=-1))
        return self.to_out(merge_heads(torch.nn.functional.scaled_dot_product_attention(q, k, v)))


class FeedForward(nn.Module):
    """``net``: Linear(D -> mlp), GELU, Dropout, Linear(mlp -> D), Dropout (keys net.0, net.3)."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
