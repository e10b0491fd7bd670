"""The Triton forward kernel: out[n, q, m*D + d] = sum over L*P of w * bilinear sample.

Layout and rules: :mod:`msda_ops.triton_kernels`; launched by :mod:`msda_ops.triton_ops`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from msda_ops.triton_sampling import gather, program_tile, sample_tile


@triton.jit
def msda_forward_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, w_ptr, out_ptr,
    Lq, M, D, L, P, num_q_blocks, S,
    sv_n, sv_s, sv_m, sv_d,
    ss_l, ss_c, st_l,
    sl_n, sl_q, sl_m, sl_l, sl_p, sl_c,
    sw_n, sw_q, sw_m, sw_l, sw_p,
    so_n, so_q, so_c,
    SOFTMAX: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_LP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """out[n, q, m*D + d] = sum_{l,p} attn * bilinear(value[n, :, m, d] at loc)."""
    n, m, q = program_tile(num_q_blocks, M, BLOCK_Q)
    attn, c00, width, lx, ly, v00, v01, v10, v11, nan_loc, _, _, _ = sample_tile(
        shapes_ptr, starts_ptr, loc_ptr, w_ptr, n, m, q, Lq, L, P, S,
        ss_l, ss_c, st_l, sl_n, sl_q, sl_m, sl_l, sl_p, sl_c, sw_n, sw_q, sw_m, sw_l, sw_p,
        SOFTMAX, BLOCK_LP,
    )  # fmt: skip
    # Bilinear weights per corner: (y0,x0), (y0,x1), (y1,x0), (y1,x1). The sample is formed
    # first and then weighted, as in the reference: an infinite weight times a sample of 0
    # (outside the map) is NaN, times a non-zero sample ±inf.
    hx = 1.0 - lx
    hy = 1.0 - ly
    a00 = (hy * hx)[:, :, None]
    a01 = (hy * lx)[:, :, None]
    a10 = (ly * hx)[:, :, None]
    a11 = (ly * lx)[:, :, None]
    attn3 = attn[:, :, None]
    nan3 = nan_loc[:, :, None]
    base = value_ptr + n * sv_n + m * sv_m
    i00 = c00 * sv_s
    i01 = (c00 + 1) * sv_s
    i10 = (c00 + width) * sv_s
    i11 = (c00 + width + 1) * sv_s
    out_row = out_ptr + n * so_n + q[:, None] * so_q
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
        d_ok = d < D
        d_off = d * sv_d
        sample = a00 * gather(base, i00, v00, d_off, d_ok)
        sample += a01 * gather(base, i01, v01, d_off, d_ok)
        sample += a10 * gather(base, i10, v10, d_off, d_ok)
        sample += a11 * gather(base, i11, v11, d_off, d_ok)
        acc = tl.where(nan3, float("nan"), attn3 * sample)
        out = tl.sum(acc, axis=1)
        ptrs = out_row + ((m * D + d) * so_c)[None, :]
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=(q < Lq)[:, None] & d_ok[None, :])
