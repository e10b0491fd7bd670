"""The Triton backward kernel: gradients of value (float32 atomics), locations and weights.

Layout and rules: :mod:`msda_ops.triton_kernels`; launched by :mod:`msda_ops.triton_ops`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from msda_ops.triton_sampling import gather, program_tile, sample_tile


@triton.jit
def _corner_grad(base, gv_base, pixel, valid, sv_s, sgv_s, d, sv_d, d_ok, go, coef):
    """<grad_out, value at a corner> per sample; scatters coef * grad_out into grad_value."""
    v = gather(base, pixel * sv_s, valid, d * sv_d, d_ok)
    safe = tl.where(valid, pixel, 0) * sgv_s
    tl.atomic_add(
        gv_base + safe[:, :, None] + d[None, None, :],
        coef[:, :, None] * go,
        mask=valid[:, :, None] & d_ok[None, None, :],
        sem="relaxed",  # a sum: no ordering with other memory is needed (default: acq_rel)
    )
    return tl.sum(go * v, axis=2)


@triton.jit
def msda_backward_kernel(
    go_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, w_ptr,
    gv_ptr, gl_ptr, gw_ptr,
    Lq, M, D, L, P, num_q_blocks, S,
    sg_n, sg_q, sg_c,
    sv_n, sv_s, sv_m, sv_d,
    sgv_n, sgv_s, sgv_m,
    ss_l, ss_c, st_l,
    sl_n, sl_q, sl_m, sl_l, sl_p, sl_c,
    sw_n, sw_q, sw_m, sw_l, sw_p,
    SOFTMAX: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_LP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    """grad_value (float32 buffer with unit channel stride, scattered with atomics), and
    grad_locations / grad_weights (contiguous, each sample written once by its program; the
    logits' gradient under SOFTMAX)."""
    n, m, q = program_tile(num_q_blocks, M, BLOCK_Q)
    attn, c00, width, lx, ly, v00, v01, v10, v11, nan_loc, width_f, height_f, ok = sample_tile(
        shapes_ptr, starts_ptr, loc_ptr, w_ptr, n, m, q, Lq, L, P, S,
        ss_l, ss_c, st_l, sl_n, sl_q, sl_m, sl_l, sl_p, sl_c, sw_n, sw_q, sw_m, sw_l, sw_p,
        SOFTMAX, BLOCK_LP,
    )  # fmt: skip
    hx = 1.0 - lx
    hy = 1.0 - ly
    base = value_ptr + n * sv_n + m * sv_m
    gv_base = gv_ptr + n * sgv_n + m * sgv_m
    go_row = go_ptr + n * sg_n + q[:, None] * sg_q
    q_ok = q < Lq
    # <grad_out, value> at each corner of each sample, summed over the channel chunks.
    dot00 = tl.zeros_like(attn)
    dot01 = tl.zeros_like(attn)
    dot10 = tl.zeros_like(attn)
    dot11 = tl.zeros_like(attn)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
        d_ok = d < D
        go_mask = q_ok[:, None] & d_ok[None, :]
        go = tl.load(go_row + ((m * D + d) * sg_c)[None, :], mask=go_mask, other=0.0)
        go = go.to(tl.float32)[:, None, :]
        dot00 += _corner_grad(
            base, gv_base, c00, v00, sv_s, sgv_s, d, sv_d, d_ok, go, attn * hy * hx
        )
        dot01 += _corner_grad(
            base, gv_base, c00 + 1, v01, sv_s, sgv_s, d, sv_d, d_ok, go, attn * hy * lx
        )
        dot10 += _corner_grad(
            base, gv_base, c00 + width, v10, sv_s, sgv_s, d, sv_d, d_ok, go, attn * ly * hx
        )
        dot11 += _corner_grad(
            base, gv_base, c00 + width + 1, v11, sv_s, sgv_s, d, sv_d, d_ok, go, attn * ly * lx
        )
    grad_w = hy * hx * dot00 + hy * lx * dot01 + ly * hx * dot10 + ly * lx * dot11
    # d(pixel x)/dx = W, d(pixel y)/dy = H.
    grad_x = attn * (hy * (dot01 - dot00) + ly * (dot11 - dot10)) * width_f
    grad_y = attn * (hx * (dot10 - dot00) + lx * (dot11 - dot01)) * height_f
    # NaN location gradients for a NaN location and for a non-finite weight (inside the map
    # or not): the rule of msda_sampling.h's location_grad, shared by every backend.
    unbounded = nan_loc | (ok & ((attn - attn) != 0.0))
    grad_x = tl.where(unbounded, float("nan"), grad_x)
    grad_y = tl.where(unbounded, float("nan"), grad_y)
    grad_w = tl.where(nan_loc, float("nan"), grad_w)
    if SOFTMAX:
        # Softmax backward over the L*P samples of a row: a_i * (g_i - sum_j a_j g_j).
        grad_w = attn * (grad_w - tl.sum(attn * grad_w, axis=1)[:, None])
    lp = tl.arange(0, BLOCK_LP)[None, :]
    sample = ((n * Lq + q[:, None]) * M + m) * (L * P) + lp
    tl.store(gw_ptr + sample, grad_w.to(gw_ptr.dtype.element_ty), mask=ok)
    tl.store(gl_ptr + 2 * sample, grad_x.to(gl_ptr.dtype.element_ty), mask=ok)
    tl.store(gl_ptr + 2 * sample + 1, grad_y.to(gl_ptr.dtype.element_ty), mask=ok)
