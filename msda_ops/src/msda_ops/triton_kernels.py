"""Triton kernels of multi-scale deformable attention (forward and backward).

Imported lazily by :mod:`msda_ops.triton_ops` (Triton is optional). Whether the kernels are
compiled for the GPU or run by Triton's CPU interpreter is decided when this module is
imported (``TRITON_INTERPRET=1``), as for every ``@triton.jit`` function.

One program handles ``BLOCK_Q`` queries of one (image n, head m) and all their L*P samples
at once, as 2-D tiles ``[BLOCK_Q, BLOCK_LP]``; the channels are visited in chunks of
``BLOCK_D`` (3-D tiles ``[BLOCK_Q, BLOCK_LP, BLOCK_D]``), so any D, L and P work through masks.
Consequences of that layout:

- the softmax over L*P (``SOFTMAX``) is a row reduction of the logits tile, done in
  registers: the normalised weights are never written to memory;
- the location and weight gradients of a sample are owned by one program (no atomics);
  only the value gradient is scattered, with float32 ``atomic_add`` into a float32 buffer
  (bfloat16 atomics are missing in the interpreter, and float32 sums are more accurate);
- every offset is formed in int64, so tensors past 2**31 elements are indexed correctly;
- every load is masked, and corner indices of samples outside a map are replaced by 0
  before any address is formed.

Semantics (DESIGN.md): pixel (x*W - 0.5, y*H - 0.5), bilinear, corners outside the map
contribute zero; a NaN location makes its sample (hence the output and the gradients that
depend on it) NaN; ±inf and far-away locations contribute zero; a non-finite attention
weight multiplies the whole bilinear sample (inf * 0 = NaN) and makes its location
gradients NaN (the rule of every backend, see msda_ops/README.md).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _samples(
    shapes_ptr, starts_ptr, loc_ptr, w_ptr, n, m, q, Lq, L, P, S,
    ss_l, ss_c, st_l,
    sl_n, sl_q, sl_m, sl_l, sl_p, sl_c,
    sw_n, sw_q, sw_m, sw_l, sw_p,
    SOFTMAX: tl.constexpr, BLOCK_LP: tl.constexpr,
):  # fmt: skip
    """Attention weights, bilinear corners and flags of the [BLOCK_Q, BLOCK_LP] samples."""
    lp = tl.arange(0, BLOCK_LP)
    level = (lp // P).to(tl.int64)
    point = (lp % P).to(tl.int64)
    lp_ok = lp < L * P
    ok = (q < Lq)[:, None] & lp_ok[None, :]
    height = tl.load(shapes_ptr + level * ss_l, mask=lp_ok, other=1).to(tl.int64)[None, :]
    width = tl.load(shapes_ptr + level * ss_l + ss_c, mask=lp_ok, other=1).to(tl.int64)[None, :]
    start = tl.load(starts_ptr + level * st_l, mask=lp_ok, other=0).to(tl.int64)[None, :]
    # A level whose rows would reach outside value (S rows) reads nothing, as in the CUDA
    # kernel (msda_sampling.h, make_level): whatever spatial_shapes holds, no stray read.
    level_ok = (height > 0) & (width > 0) & (start >= 0) & (start <= S)
    level_ok = level_ok & (height <= (S - start) // tl.maximum(width, 1))

    loc = loc_ptr + n * sl_n + m * sl_m + q[:, None] * sl_q + (level * sl_l + point * sl_p)[None, :]
    x = tl.load(loc, mask=ok, other=0.0).to(tl.float32)
    y = tl.load(loc + sl_c, mask=ok, other=0.0).to(tl.float32)
    wp = w_ptr + n * sw_n + m * sw_m + q[:, None] * sw_q + (level * sw_l + point * sw_p)[None, :]
    if SOFTMAX:
        logits = tl.load(wp, mask=ok, other=float("-inf")).to(tl.float32)
        # Rows of padding queries (q >= Lq) are all -inf: shift 0 and divide by 1 there.
        # Real rows keep softmax's own answers (NaN for NaN or all -inf logits).
        q_ok = q < Lq
        top = tl.where(q_ok, tl.max(logits, axis=1), 0.0)
        e = tl.exp(logits - top[:, None])
        total = tl.where(q_ok, tl.sum(e, axis=1), 1.0)
        attn = tl.where(ok, e / total[:, None], 0.0)
    else:
        attn = tl.load(wp, mask=ok, other=0.0).to(tl.float32)

    width_f = width.to(tl.float32)
    height_f = height.to(tl.float32)
    px = x * width_f - 0.5
    py = y * height_f - 0.5
    # False for NaN and ±inf: such samples form no index at all.
    inside = ok & level_ok & (px >= -1.0) & (px < width_f) & (py >= -1.0) & (py < height_f)
    px = tl.where(inside, px, 0.0)
    py = tl.where(inside, py, 0.0)
    x0f = tl.floor(px)
    y0f = tl.floor(py)
    lx = px - x0f
    ly = py - y0f
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    x0_in = x0 >= 0
    x1_in = x0 + 1 < width
    y0_in = y0 >= 0
    y1_in = y0 + 1 < height
    corner = start + y0 * width + x0  # pixel (y0, x0) in S; only used where valid
    nan_loc = ok & level_ok & ((x != x) | (y != y))
    return (
        attn, corner, width, lx, ly, inside & y0_in & x0_in, inside & y0_in & x1_in,
        inside & y1_in & x0_in, inside & y1_in & x1_in, nan_loc, width_f, height_f, ok,
    )  # fmt: skip


@triton.jit
def _gather(base, index, valid, d_off, d_ok):
    """value[index, d] as float32 [BLOCK_Q, BLOCK_LP, BLOCK_D]; 0 where not valid."""
    safe = tl.where(valid, index, 0)
    ptrs = base + safe[:, :, None] + d_off[None, None, :]
    return tl.load(ptrs, mask=valid[:, :, None] & d_ok[None, None, :], other=0.0).to(tl.float32)


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
    pid = tl.program_id(0).to(tl.int64)
    nm = pid // num_q_blocks
    n = nm // M
    m = nm % M
    q = (pid % num_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q).to(tl.int64)
    attn, c00, width, lx, ly, v00, v01, v10, v11, nan_loc, _, _, _ = _samples(
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
        sample = a00 * _gather(base, i00, v00, d_off, d_ok)
        sample += a01 * _gather(base, i01, v01, d_off, d_ok)
        sample += a10 * _gather(base, i10, v10, d_off, d_ok)
        sample += a11 * _gather(base, i11, v11, d_off, d_ok)
        acc = tl.where(nan3, float("nan"), attn3 * sample)
        out = tl.sum(acc, axis=1)
        ptrs = out_row + ((m * D + d) * so_c)[None, :]
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=(q < Lq)[:, None] & d_ok[None, :])


@triton.jit
def _corner_grad(base, gv_base, pixel, valid, sv_s, sgv_s, d, sv_d, d_ok, go, coef):
    """<grad_out, value at a corner> per sample; scatters coef * grad_out into grad_value."""
    v = _gather(base, pixel * sv_s, valid, d * sv_d, d_ok)
    safe = tl.where(valid, pixel, 0) * sgv_s
    tl.atomic_add(
        gv_base + safe[:, :, None] + d[None, None, :],
        coef[:, :, None] * go,
        mask=valid[:, :, None] & d_ok[None, None, :],
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
    pid = tl.program_id(0).to(tl.int64)
    nm = pid // num_q_blocks
    n = nm // M
    m = nm % M
    q = (pid % num_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q).to(tl.int64)
    attn, c00, width, lx, ly, v00, v01, v10, v11, nan_loc, width_f, height_f, ok = _samples(
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
