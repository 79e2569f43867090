"""Deformable cross-attention (paper §3.2.2, eq. 1-4) against loop-based reference maths (CPU, seeded)."""
import pytest
import torch

from deforhmr_model.network.deformable_attention import CrossAttention, DeformableCrossAttention, reference_grid

B, C, H, W, Q, D = 2, 32, 16, 12, 25, 24


def make(heads=8, groups=4, offset_range=1.0, pe="relative", stride=1, dim_head=4, seed=0):
    torch.manual_seed(seed)
    return DeformableCrossAttention(D, C, (H, W), Q, heads=heads, dim_head=dim_head, groups=groups,
                                    offset_range=offset_range, offset_stride=stride, pe=pe)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, Q, D, generator=g), torch.randn(B, C, H, W, generator=g)


def bilinear(img: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Explicit bilinear lookup, zeros outside, pixel-centre convention (align_corners=False).
    img (B, c, H, W), pts (B, N, 2) normalised (x, y) -> (B, c, N)."""
    b, c, h, w = img.shape
    px = ((pts[..., 0] + 1) * w - 1) / 2
    py = ((pts[..., 1] + 1) * h - 1) / 2
    x0, y0 = px.floor(), py.floor()
    out = torch.zeros(b, c, pts.shape[1], dtype=img.dtype)
    flat = img.flatten(2)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
            valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            vals = flat.gather(2, idx[:, None, :].expand(b, c, -1))
            out += vals * (wgt * valid)[:, None, :]
    return out


def reference(mod: DeformableCrossAttention, x, ctx):
    """Loop over groups and heads; every step written out from eq. 1-4 and the module docstring."""
    g_n, heads = mod.groups, mod.heads
    hg, cg = heads // g_n, C // g_n
    positions, samples = [], []
    src = ctx + mod.abs_pe if mod.pe == "absolute" else ctx
    for g in range(g_n):
        raw = mod.offset(ctx[:, g * cg:(g + 1) * cg])                 # (B, 2, Hk, Wk)
        hk, wk = raw.shape[-2:]
        ry = ((torch.arange(hk) + 0.5) * 2 / hk - 1)[:, None].expand(hk, wk)
        rx = ((torch.arange(wk) + 0.5) * 2 / wk - 1)[None, :].expand(hk, wk)
        px = rx + mod.offset_range / wk * torch.tanh(raw[:, 0])
        py = ry + mod.offset_range / hk * torch.tanh(raw[:, 1])
        pos = torch.stack([px, py], -1).reshape(B, hk * wk, 2)
        positions.append(pos)
        samples.append(bilinear(src[:, g * cg:(g + 1) * cg], pos))      # (B, cg, N)
    s = torch.cat(samples, 1).transpose(1, 2)                         # (B, N, C)
    k, v = (s @ mod.to_kv.weight.T).chunk(2, -1)
    q = x @ mod.to_q.weight.T
    dh = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) * dh ** -0.5  # (B, Q, N)
        if mod.pe == "relative":
            table = mod.rpe[:, h][None].expand(B, Q, H, W)              # one grid per query
            logits = logits + bilinear(table, positions[h // hg])
        outs.append(torch.softmax(logits, -1) @ v[..., sl])
    return mod.to_out(torch.cat(outs, -1)), positions


@pytest.mark.parametrize("heads,groups,lam,pe,stride", [
    (8, 4, 1.0, "relative", 1), (16, 8, 2.0, "relative", 1), (8, 4, 2.0, "absolute", 1),
    (4, 2, 1.0, "none", 1), (8, 4, 1.0, "relative", 2)])
def test_matches_loop_reference(heads, groups, lam, pe, stride):
    mod = make(heads, groups, lam, pe, stride)
    with torch.no_grad():
        mod.offset[3].weight.mul_(20)                                 # offsets well away from zero
        if pe == "relative":
            mod.rpe.normal_(0, 1)
    x, ctx = inputs()
    with torch.no_grad():
        out, maps = mod(x, ctx, need_weights=True)
        fused, _ = mod(x, ctx)
        ref, positions = reference(mod, x, ctx)
    hk, wk = H // stride, W // stride
    assert maps.positions.shape == (B, groups, hk, wk, 2)
    assert maps.weights.shape == (B, heads, Q, hk * wk)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps.positions.reshape(B, groups, -1, 2), torch.stack(positions, 1))
    torch.testing.assert_close(maps.weights.sum(-1), torch.ones(B, heads, Q))
    assert (maps.positions - reference_grid(hk, wk)).abs().amax() > 0.02


@pytest.mark.parametrize("lam", [1.0, 2.0])
def test_offsets_bounded_by_offset_range(lam):
    mod = make(offset_range=lam)
    with torch.no_grad():
        mod.offset[3].weight.mul_(1e4)                                # saturate tanh
        pos = mod.sampling_positions(inputs()[1])                     # (B*G, H, W, 2)
    delta = pos - reference_grid(H, W)
    cells = delta * torch.tensor([W / 2, H / 2])                      # normalised -> key-grid cells
    assert cells.abs().amax() <= lam / 2 + 1e-5                       # eq. 2: |ΔP| <= λo / H_r
    assert cells.abs().amax() > 0.99 * lam / 2                        # and the bound is reachable
    assert cells.abs().amax() <= lam                                  # within λo grid cells


def test_offsets_identical_for_different_query_tokens():
    mod = make()
    x1, ctx = inputs(1)
    x2 = torch.randn(B, Q, D)
    with torch.no_grad():
        _, m1 = mod(x1, ctx, need_weights=True)
        _, m2 = mod(x2, ctx, need_weights=True)
        _, m3 = mod(x1[:, :1].expand(B, Q, D), ctx, need_weights=True)
    assert torch.equal(m1.positions, m2.positions) and torch.equal(m1.positions, m3.positions)
    assert m1.positions.shape == (B, 4, H, W, 2)                      # no query axis: shared by all


def _explicit_cross_attention(x, ctx, wq, wkv, wo, bo, heads):
    tokens = ctx.flatten(2).transpose(1, 2)                           # (B, H*W, C)
    q = x @ wq.T
    k, v = (tokens @ wkv.T).chunk(2, -1)
    dh = q.shape[-1] // heads
    out = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / dh ** 0.5, -1)
        out.append(a @ v[..., sl])
    return torch.cat(out, -1) @ wo.T + bo


def test_zero_offsets_and_zero_bias_equal_ordinary_cross_attention():
    mod = make(heads=8, groups=4)
    with torch.no_grad():
        mod.offset[3].weight.zero_()
        mod.rpe.zero_()
    x, ctx = inputs()
    with torch.no_grad():
        out, maps = mod(x, ctx, need_weights=True)
        ref = _explicit_cross_attention(x, ctx, mod.to_q.weight, mod.to_kv.weight,
                                        mod.to_out[0].weight, mod.to_out[0].bias, 8)
        regular = CrossAttention(D, C, heads=8, dim_head=4)
        regular.load_state_dict({k: v for k, v in mod.state_dict().items()
                                 if k.startswith(("to_q", "to_kv", "to_out"))})
        reg_out, reg_maps = regular(x, ctx, need_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reg_out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps.positions[:, 0], reference_grid(H, W).expand(B, H, W, 2))
    torch.testing.assert_close(reg_maps.positions[:, 0], reference_grid(H, W).expand(B, H, W, 2))


def test_relative_bias_reads_each_querys_grid_at_pixel_centres():
    mod = make(heads=8, groups=4)
    with torch.no_grad():
        mod.offset[3].weight.zero_()
        mod.rpe.normal_(0, 2)
    x, ctx = inputs()
    with torch.no_grad():
        bias = mod._rpe_bias(mod.sampling_positions(ctx), B)          # (B, heads, Q, N)
    expected = mod.rpe.detach().reshape(Q, 8, H * W).transpose(0, 1)  # (heads, Q, N)
    torch.testing.assert_close(bias, expected.expand(B, -1, -1, -1), atol=1e-5, rtol=1e-4)


def test_gradients_reach_offsets_and_rpe_grid():
    mod = make(pe="relative")
    x, ctx = inputs()
    out, _ = mod(x, ctx)
    out.square().sum().backward()
    for name in ("offset.0.weight", "offset.1.weight", "offset.3.weight", "rpe", "to_q.weight"):
        grad = dict(mod.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_absolute_pe_is_added_to_the_sampled_context():
    mod = make(pe="absolute")
    plain = make(pe="none")
    plain.load_state_dict({k: v for k, v in mod.state_dict().items() if k != "abs_pe"})
    x, ctx = inputs()
    with torch.no_grad():
        a, _ = mod(x, ctx)
        b, _ = plain(x, ctx + mod.abs_pe)       # E also in the offset net's input
        c, _ = plain(x, ctx)
    assert not torch.allclose(a, c)
    # offsets come from X alone, features from X + E: differs from feeding X + E everywhere
    with torch.no_grad():
        torch.testing.assert_close(mod.sampling_positions(ctx), plain.sampling_positions(ctx))
        assert not torch.allclose(mod.sampling_positions(ctx), plain.sampling_positions(ctx + mod.abs_pe))
    assert not torch.allclose(a, b)


def test_bf16_runs_with_matching_grid_dtype():
    mod = make()
    x, ctx = inputs()
    with torch.no_grad():
        ref, _ = mod(x, ctx)
        mod16 = mod.to(torch.bfloat16)
        out, maps = mod16(x.bfloat16(), ctx.bfloat16(), need_weights=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.1)
    assert maps.weights.dtype == torch.bfloat16
