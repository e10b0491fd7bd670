"""What both Triton kernels share: the program's place in the grid, the [BLOCK_Q, BLOCK_LP]
tile of samples (weights, the bilinear corners and their validity) and the masked gather of
value at corners.

The sampling rule is that of msda_sampling.h (the C++/CUDA kernels); see
:mod:`msda_ops.triton_kernels` for the layout of a program.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def program_tile(num_q_blocks, M, BLOCK_Q: tl.constexpr):
    """This program's (n, m, q): batch index, head, and its BLOCK_Q query indices.

    Programs are numbered (n, m, query block) with the query block fastest (see
    :mod:`msda_ops.triton_kernels`); int64 from the start, so no offset overflows.
    """
    pid = tl.program_id(0).to(tl.int64)
    nm = pid // num_q_blocks
    q = (pid % num_q_blocks) * BLOCK_Q + tl.arange(0, BLOCK_Q).to(tl.int64)
    return nm // M, nm % M, q


@triton.jit
def sample_tile(
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
def gather(base, index, valid, d_off, d_ok):
    """value[index, d] as float32 [BLOCK_Q, BLOCK_LP, BLOCK_D]; 0 where not valid."""
    safe = tl.where(valid, index, 0)
    ptrs = base + safe[:, :, None] + d_off[None, None, :]
    return tl.load(ptrs, mask=valid[:, :, None] & d_ok[None, None, :], other=0.0).to(tl.float32)
