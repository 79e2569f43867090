"""The ViTPose vision transformer used as DeforHMR's frozen encoder (paper §3.1).

Rebuilt from ``hmr2_reference.md`` §1 (HMR 2.0's ``backbones/vit.py``, itself the ViTPose
ViT). Module and parameter names equal ViTPose's (``patch_embed.proj``, ``pos_embed``,
``blocks.{i}.norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2``, ``last_norm``), so
ViTPose ``backbone.*`` keys and HMR 2.0 ``backbone.*`` keys load 1:1.

Layout facts kept from the reference:

* input exactly (B, 3, 256, 192) (no position-embedding interpolation at run time);
* patch embedding: Conv2d(3 -> C, kernel 16, stride 16, **padding 2**), giving a 16x12 grid
  (the last 2 rows/columns of the image are never covered);
* ``pos_embed`` (1, 1 + 192, C): slot 0 is a left-over "cls" slot that is broadcast-added to
  every token, slots 1..192 are per patch (row-major, index = h * 12 + w);
* pre-norm blocks, LayerNorm eps 1e-6, fused ``qkv`` with bias, exact GELU, ``last_norm``;
* output channels-first (B, C, 16, 12).

Deviations: stochastic depth (drop_path) is omitted because the encoder is frozen and run in
eval mode (§3.1), where it is the identity; attention uses
``F.scaled_dot_product_attention`` (fused on GPU), which is the same maths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ViTEncoder(nn.Module):
    """ViTPose ViT: (B, 3, 256, 192) ImageNet-normalised RGB -> context (B, C, 16, 12).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: ViT size (ViT-H: 1280, 32, 16, 4).
        img_size: (H, W) pixels the position embedding was trained for.
        patch_size, patch_padding: patch kernel/stride and the Conv2d padding (16, 2).
        qkv_bias, norm_eps: as ViTPose (True, 1e-6).
    """

    def __init__(self, embed_dim: int = 1280, depth: int = 32, num_heads: int = 16,
                 mlp_ratio: float = 4.0, img_size: tuple[int, int] = (256, 192),
                 patch_size: int = 16, patch_padding: int = 2, qkv_bias: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_embed = PatchEmbed(embed_dim, patch_size, patch_padding)
        gh = (img_size[0] + 2 * patch_padding - patch_size) // patch_size + 1
        gw = (img_size[1] + 2 * patch_padding - patch_size) // patch_size + 1
        self.grid_size = (gh, gw)
        self.embed_dim = embed_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw + 1, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_eps) for _ in range(depth))
        self.last_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) with (H, W) == ``img_size`` -> context (B, C, gh, gw).

        Raises:
            ValueError: if the spatial size differs from ``img_size``.
        """
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"encoder expects images (B, 3, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got {tuple(images.shape)}; crop people with deforhmr_model.people.crop first")
        x = self.patch_embed(images)                                   # (B, N, C), N = gh * gw
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]          # cls slot broadcast-added
        for blk in self.blocks:
            x = blk(x)
        x = self.last_norm(x)
        b, n, c = x.shape
        return x.transpose(1, 2).reshape(b, c, *self.grid_size)       # (B, C, gh, gw)


class PatchEmbed(nn.Module):
    """Conv2d patchify with ViTPose's padding; (B, 3, H, W) -> (B, gh * gw, C) row-major."""

    def __init__(self, embed_dim: int, patch_size: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN1 x), then x + MLP(LN2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` Linear (q, k, v order, head-major)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                           # each (B, heads, N, dh)
        out = F.scaled_dot_product_attention(q, k, v)                  # scale dh^-0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

