"""Query-agnostic deformable cross-attention (DeforHMR paper §3.2.2, eq. 1-4) and HMR 2.0's
regular cross-attention (``hmr2_reference.md`` §2.2), with the same projection names
(``to_q``, ``to_kv``, ``to_out.0``) so the two differ only in where keys come from.

Deformable cross-attention, for queries Y (B, Q, D) and context X (B, C, H, W):

1. offsets from the context only (query-agnostic, §3.2.3): X is split into G contiguous
   channel groups of C/G channels, folded into the batch (B*G, C/G, H, W), and one offset
   net shared by all groups computes ΔP' = Conv1x1(GELU(LN(DWConv_kxk(X_g)))) -> (B*G, 2, Hk, Wk);
2. ΔP = λo * tanh(ΔP') * (1/Wk, 1/Hk) per axis (eq. 2-3);
3. P = R + ΔP with R the key-grid pixel centres in grid_sample's normalised [-1, 1] frame (eq. 1, 3);
4. S = bilinear sample of X_g at P (zeros outside), channels re-ordered (group, C/G) -> (B, N, C),
   N = Hk * Wk keys shared by every query;
5. K, V = split(Wkv S), Q = Wq Y; heads are ordered (group, head-in-group), head h uses
   group h // (heads / G)'s positions for its bias;
6. A = softmax(Q K^T / sqrt(d_head) + φ(Z_rpe, P)), out = Wo (A V) (eq. 4).

Resolutions of the paper's ambiguities (``deformable_attention_notes.md`` §8; each is a choice):

* A1  H_r is the key-grid height Hk for the y offset and the key-grid width Wk for x (per axis,
  DAT-v1); the map is 16x12, a shared H_r would shrink the x range.
* A2  key-grid stride r = 1 by default (Hk x Wk = 16 x 12, N = 192); ``offset_stride`` > 1
  gives a downsampled key grid.
* A3  R_ij = (2(j + 0.5)/Wk - 1, 2(i + 0.5)/Hk - 1) (pixel centres) sampled with
  ``align_corners=False``: with zero offsets the keys are exactly the context tokens, so the
  module reduces to ordinary cross-attention (plus the bias) - tested.
* A4/A10  offsets per group from C/G channels of X (no projection first), one offset net shared
  by the groups; Wk, Wv dense over all C sampled channels (key n mixes the groups' n-th points).
* A5  offset net = depthwise k x k conv (k = 5, stride r, pad k//2, bias) -> LayerNorm over
  channels (eps 1e-5) -> exact GELU -> 1x1 conv to 2 channels, no bias. Channel 0 is Δx and
  channel 1 is Δy, grid_sample's (x, y) order (DAT stores (y, x) and flips; equivalent).
* A7  default PyTorch init for the offset net (as DAT): offsets are non-zero at step 0.
* A8/A9  relative PE: Z_rpe has one learned (H, W) grid per query and head, shape
  (Q, heads, H, W) over the context map, looked up bilinearly at P (absolute positions,
  gradient flows to P), same align_corners as the features, zeros outside, trunc-normal
  std 0.01 init.
* Absolute PE (Table 4; the paper does not define it): a learned (1, C, H, W) embedding added
  to X before sampling (so the keys/values carry their sampled position); offsets still come
  from X alone. No PE: no bias.
* A11 the bound: |ΔP| <= λo/Hk (normalised), i.e. λo/2 key-grid cells, as eq. 2 says with
  coordinates in [-1, 1] (the text's "λo times the grid spacing" would be twice that).
* A13 no extra LayerNorm on X: the encoder's ``last_norm`` already normalises it (as HMR 2.0).
* A14 no clamp: tanh bounds ΔP, points may leave [-1, 1] by < λo/2 cells and read zeros.

No Python loops over heads, groups or queries; ``F.scaled_dot_product_attention`` with the
bias as ``attn_mask`` (fused on GPU). The sampling grid is cast to the feature dtype (bf16).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AttentionMaps:
    """Where one cross-attention layer looked (paper Fig. 1, 5).

    positions: (B, G, Hk, Wk, 2) sampling positions P, normalised (x, y) in [-1, 1] over the
        context map (``align_corners=False``: -1 is the left/top edge of the first token,
        pixel centre of token (i, j) is (2(j+0.5)/W - 1, 2(i+0.5)/H - 1)). Regular
        cross-attention reports G = 1 and the fixed token grid.
    weights: (B, heads, Q, N) attention probabilities (softmax over N = Hk * Wk keys, key index
        row-major over the key grid); head h uses group h // (heads / G).
    """

    positions: torch.Tensor
    weights: torch.Tensor


@functools.lru_cache(maxsize=32)
def reference_grid(hk: int, wk: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Key-grid pixel centres R (hk, wk, 2) as normalised (x, y) (eq. 1 with i -> i + 0.5).

    Cached per (size, device, dtype): treat the result as read-only.
    """
    # a normal (non-inference) tensor even when first built under torch.inference_mode
    with torch.inference_mode(False), torch.no_grad():
        ys = (torch.arange(hk, device=device, dtype=dtype) + 0.5) * (2.0 / hk) - 1.0
        xs = (torch.arange(wk, device=device, dtype=dtype) + 0.5) * (2.0 / wk) - 1.0
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx, gy], dim=-1)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
           need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(dh) + bias) v for q (B, h, Q, dh), k/v (B, h, N, dh), bias (B, h, Q, N).

    Returns (out (B, h, Q, dh), weights (B, h, Q, N) or None). Without ``need_weights`` the
    fused ``F.scaled_dot_product_attention`` kernel is used.
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias), None
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    weights = logits.softmax(dim=-1)
    return weights @ v, weights


class CrossAttention(nn.Module):
    """HMR 2.0's cross-attention over all H*W context tokens (``hmr2_reference.md`` §2.2).

    ``to_q`` Linear(dim -> heads*dim_head, no bias), ``to_kv`` Linear(context_dim ->
    2*heads*dim_head, no bias; k first, v second), ``to_out.0`` Linear(-> dim, bias).
    """

    def __init__(self, dim: int, context_dim: int, heads: int = 8, dim_head: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, AttentionMaps | None]:
        """x (B, Q, dim), context (B, C, H, W) -> (B, Q, dim) and the maps if asked."""
        b, _, h, w = context.shape
        tokens = context.flatten(2).transpose(1, 2)                    # (B, H*W, C), index h*W + w
        k, v = self.to_kv(tokens).chunk(2, dim=-1)
        out, weights = attend(split_heads(self.to_q(x), self.heads), split_heads(k, self.heads),
                              split_heads(v, self.heads), None, need_weights)
        maps = None
        if need_weights:
            grid = reference_grid(h, w, context.device).expand(b, 1, h, w, 2)
            maps = AttentionMaps(positions=grid, weights=weights)
        return self.to_out(merge_heads(out)), maps


class DeformableCrossAttention(nn.Module):
    """Query-agnostic deformable cross-attention (paper §3.2.2); see the module docstring.

    Args:
        dim: query width D.
        context_dim: context channels C (encoder embed dim).
        context_size: context map (H, W), the RPE grid size.
        num_queries: Q, number of query tokens (one RPE grid per query).
        heads, dim_head: attention heads and width per head.
        groups: offset groups G (heads % G == 0, C % G == 0).
        offset_range: λo.
        offset_kernel, offset_stride: depthwise conv kernel k and stride r of the offset net.
        pe: "none" | "absolute" | "relative".
    """

    def __init__(self, dim: int, context_dim: int, context_size: tuple[int, int], num_queries: int,
                 heads: int = 16, dim_head: int = 64, groups: int = 8, offset_range: float = 1.0,
                 offset_kernel: int = 5, offset_stride: int = 1, pe: str = "relative",
                 dropout: float = 0.0):
        super().__init__()
        inner, cg = heads * dim_head, context_dim // groups
        self.heads, self.groups, self.offset_range, self.pe = heads, groups, offset_range, pe
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.offset = nn.Sequential(
            nn.Conv2d(cg, cg, offset_kernel, offset_stride, offset_kernel // 2, groups=cg),
            ChannelLayerNorm(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, bias=False),
        )
        h, w = context_size
        if pe == "relative":
            self.rpe = nn.Parameter(torch.zeros(num_queries, heads, h, w))
            nn.init.trunc_normal_(self.rpe, std=0.01)
        elif pe == "absolute":
            self.abs_pe = nn.Parameter(torch.zeros(1, context_dim, h, w))
            nn.init.trunc_normal_(self.abs_pe, std=0.02)

    def sampling_positions(self, context: torch.Tensor) -> torch.Tensor:
        """P = R + ΔP (eq. 1-3) from the context (B, C, H, W) -> (B*G, Hk, Wk, 2) float32 (x, y)."""
        b, c, h, w = context.shape
        raw = self._offset_net(context.reshape(b * self.groups, c // self.groups, h, w))  # (BG, Hk, Wk, 2)
        hk, wk = raw.shape[1:3]
        scale = raw.new_tensor([self.offset_range / wk, self.offset_range / hk], dtype=torch.float32)
        return reference_grid(hk, wk, context.device) + torch.tanh(raw.float()) * scale

    def _offset_net(self, x: torch.Tensor) -> torch.Tensor:
        """``self.offset`` on (B*G, C/G, H, W) -> ΔP' (B*G, Hk, Wk, 2), computed channels-last
        (CPU depthwise conv and the channel LayerNorm are ~2x faster that way; same maths as
        ``self.offset(x).permute(0, 2, 3, 1)``)."""
        dw, norm, act, pw = self.offset
        y = dw(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)  # (BG, Hk, Wk, Cg)
        y = act(F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        return F.linear(y, pw.weight.flatten(1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, AttentionMaps | None]:
        """x (B, Q, dim), context (B, C, H, W) -> (B, Q, dim) and the maps if asked."""
        b, c, h, w = context.shape
        g = self.groups
        pos = self.sampling_positions(context)                         # (BG, Hk, Wk, 2)
        hk, wk = pos.shape[1:3]
        src = context + self.abs_pe.to(context.dtype) if self.pe == "absolute" else context
        # sampled in fp32 (grid and map): a bf16 grid is off by up to 1/128 of the map's width
        sampled = F.grid_sample(src.reshape(b * g, c // g, h, w).float(), pos,
                                mode="bilinear", padding_mode="zeros", align_corners=False).to(src.dtype)
        keys = sampled.reshape(b, c, hk * wk).transpose(1, 2)          # (B, N, C), channels (g, C/G)
        k, v = self.to_kv(keys).chunk(2, dim=-1)
        q = split_heads(self.to_q(x), self.heads)                           # (B, heads, Q, dh)
        bias = self._rpe_bias(pos, b).to(q.dtype) if self.pe == "relative" else None
        out, weights = attend(q, split_heads(k, self.heads), split_heads(v, self.heads), bias, need_weights)
        maps = None
        if need_weights:
            maps = AttentionMaps(positions=pos.reshape(b, g, hk, wk, 2), weights=weights)
        return self.to_out(merge_heads(out)), maps

    def _rpe_bias(self, pos: torch.Tensor, b: int) -> torch.Tensor:
        """φ(Z_rpe, P): bias (B, heads, Q, N), head h read at group h // (heads/G)'s positions."""
        q, heads, h, w = self.rpe.shape
        g, hg = self.groups, heads // self.groups
        n = pos.shape[1] * pos.shape[2]
        table = self.rpe.reshape(q, g, hg, h, w).transpose(0, 1).reshape(1, g, q * hg, h, w)
        table = table.expand(b, g, q * hg, h, w).reshape(b * g, q * hg, h, w)
        bias = F.grid_sample(table.float(), pos.reshape(b * g, 1, n, 2),   # fp32 lookup, as above
                             mode="bilinear", padding_mode="zeros", align_corners=False)
        return bias.reshape(b, g, q, hg, n).permute(0, 1, 3, 2, 4).reshape(b, heads, q, n)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads*dh) -> (B, heads, L, dh), head-major channels."""
    b, n, d = t.shape
    return t.reshape(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, dh) -> (B, L, heads*dh)."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)
