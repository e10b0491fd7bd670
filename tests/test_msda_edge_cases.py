"""Empty dimensions and non-finite inputs: every backend gives what the reference gives.

Backends: the C++ CPU kernel; Triton through its interpreter (the ``interpreter`` cases, run
in the child process of tests/test_msda_triton.py::test_interpreter_cases; see
tests/support/triton_interpreter.py); the CUDA kernel and Triton natively on a GPU (``gpu``).
The CUDA kernels also run the rule on every ``make test`` in tests/cuda_emu. The rule under test (msda_ops/README.md, "NaN and infinities"): values are
IEEE arithmetic of sum w * bilinear sample (0 outside the map, inf * 0 = NaN); location
gradients are NaN for a NaN location or a non-finite weight.
"""

from __future__ import annotations

import pytest
import torch
from msda_ops.testing import random_inputs
from support.msda_compare import assert_same_ieee, forward_and_grads, inside_poison
from support.triton_interpreter import interpreting, require

from msda_ops import ms_deform_attn, ms_deform_attn_reference

BACKENDS = [
    "kernel-cpu",
    pytest.param("kernel-cuda", marks=pytest.mark.gpu),
    pytest.param("triton-cpu", marks=pytest.mark.interpreter),
    pytest.param("triton-cuda", marks=pytest.mark.gpu),
]
NAMES = ("output", "grad_value", "grad_locations", "grad_weights")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(backend, device) of one case; the kernel cases skip in the interpreter's process."""
    name, device = request.param.split("-")
    if name == "kernel":
        if interpreting():
            pytest.skip("run by the parent process")
        return name, device
    return name, require(device)


def compare(args, backend, device, softmax=False):
    """The backend's output and gradients against the reference's on the same inputs."""
    args = [a.to(device) for a in args]
    go = torch.randn(
        args[3].shape[0], args[3].shape[1], args[0].shape[2] * args[0].shape[3],
        generator=torch.Generator().manual_seed(5),
    ).to(args[0])  # fmt: skip
    got = _run(lambda *a, **k: ms_deform_attn(*a, backend=backend, **k), args, go, softmax)
    # Half precision: the reference computed in float32 (the kernels' accumulation type)
    # and rounded once, as the kernels' results are.
    wide = [a.float() if a.is_floating_point() else a for a in args]
    expected = _run(ms_deform_attn_reference, wide, go.float(), softmax)
    dtypes = (args[0].dtype, args[0].dtype, args[3].dtype, args[4].dtype)
    expected = tuple(e.to(t) for e, t in zip(expected, dtypes, strict=True))
    for name, g, e in zip(NAMES, got, expected, strict=True):
        assert_same_ieee(g, e, args[0].dtype, f"{backend} {name}")
    return expected


def _run(fn, args, grad_output, softmax):
    leaves = [a.detach().clone().requires_grad_(a.is_floating_point()) for a in args]
    out, grads = forward_and_grads(fn, leaves, grad_output, softmax=softmax)
    return (out, *grads)


EMPTY = {"N=0": (0, 3, 2, 2), "Lq=0": (2, 0, 2, 2), "M=0": (2, 3, 0, 2), "P=0": (2, 3, 2, 0)}


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("sizes", EMPTY.values(), ids=EMPTY.keys())
def test_empty_dimensions(backend, sizes, softmax):
    """Zero images, queries, heads or points: the reference's shapes and zeros, no error."""
    n, lq, m, p = sizes
    args = random_inputs(n, lq, m, 4, [(3, 4), (2, 2)], p, seed=1)
    expected = compare(args, *backend, softmax=softmax)
    assert expected[0].shape == (n, lq, m * 4)
    assert all(not t.any() for t in expected)  # every entry is an empty sum


REFUSED = {
    "D=0": (lambda a: [a[0][..., :0], *a[1:]], "value", "D = 0"),
    "L=0": (
        lambda a: [a[0][:, :0], a[1][:0], a[2][:0], a[3][:, :, :, :0], a[4][:, :, :, :0]],
        "spatial_shapes",
        "no levels",
    ),
    "empty level": (
        lambda a: [a[0][:, :4], torch.tensor([[0, 3], [2, 2]]), torch.tensor([0, 0]), *a[3:]],
        "spatial_shapes",
        "non-positive",
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_empty_channels_or_levels_are_refused_alike(backend, case, monkeypatch):
    """D = 0, no level, or a level of size 0: the same error on every backend (on a GPU the
    level contents are read on the host for this: a device assert would end the process)."""
    monkeypatch.setenv("MSDA_OPS_CHECK_LEVELS", "1")
    mutate, name, expected = case
    args = [a.to(backend[1]) for a in mutate(list(random_inputs(1, 2, 2, 3, [(3, 4), (2, 2)], 2)))]
    messages = []
    for chosen in (backend[0], "reference"):
        with pytest.raises(ValueError) as info:
            ms_deform_attn(*args, backend=chosen)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and name in messages[0] and expected in messages[0]


def special_inputs():
    """One image, 12 queries, 2 heads, 2 levels (3x4, 2x2), 2 points, D = 3; row by row:

    inf or -inf weights on samples inside, across the border, exactly on the border line
    (a bilinear weight of 0), outside near and far from the map; NaN locations (x, y or
    both); a NaN weight; queries 10 and 11 untouched (finite everywhere).
    """
    value, shapes, starts, loc, w = random_inputs(1, 12, 2, 3, [(3, 4), (2, 2)], 2, seed=4)
    inf, nan = float("inf"), float("nan")
    cases = [
        (0, 0, 0, 0, inf, (0.4, 0.55)),  # inside
        (1, 1, 1, 1, -inf, (0.3, 0.6)),  # inside, level 1
        (2, 0, 0, 1, inf, (-0.05, 0.5)),  # across the left border
        (3, 1, 0, 0, inf, (-0.125, 0.5)),  # pixel x = -1 exactly: one corner, weight 0
        (4, 0, 1, 0, -inf, (1.2, 0.5)),  # outside, near
        (5, 1, 0, 1, inf, (7.0, -3.0)),  # far
        (6, 0, 0, 0, inf, (0.5, 0.5)),  # two infinite weights of opposite sign
        (6, 0, 1, 1, -inf, (0.2, 0.7)),
        (7, 0, 0, 0, None, (nan, 0.5)),  # NaN locations
        (8, 1, 1, 0, None, (0.5, nan)),
        (9, 0, 0, 1, nan, (nan, nan)),  # NaN location and weight
    ]
    for q, m, lvl, p, weight, xy in cases:
        if weight is not None:
            w[0, q, m, lvl, p] = weight
        loc[0, q, m, lvl, p] = torch.tensor(xy)
    w[0, 9, 1, 0, 0] = nan
    return [value, shapes, starts, loc, w]


# The CPU kernel reads a head's levels (or, in a backward split per level, one level) from a
# copy framed by zero pixels when they have at least as many samples as the copy has pixels:
# the forward's copy of a head has (3+2)(4+2) + (2+2)(2+2) = 46 pixels, against
# 12 queries x 2 levels x 2 points = 48 samples (framed) or 40 with the first 10 queries
# only, the special ones (read in place). The backward (2 heads: split per level) reads
# level 0 (30 pixels, 20 or 24 samples) in place and level 1 (16 pixels) framed in both.
@pytest.mark.parametrize("queries", [12, 10], ids=["framed", "in-place"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_infinite_weights_and_nan_locations(backend, dtype, queries):
    """Values and the three gradients: NaN, ±inf and finite entries where the reference has them."""
    args = special_inputs()
    args[3], args[4] = args[3][:, :queries], args[4][:, :queries]
    for i in (0, 3, 4):
        args[i] = args[i].to(dtype)
    expected = compare(args, *backend)
    out, _, grad_loc, _ = expected
    assert out.isinf().any() and out.isnan().any() and out[0, 10:].isfinite().all()
    assert out.shape[1] == queries
    # The rule's location gradients: NaN for both coordinates of rows 0-9's special samples.
    assert grad_loc[0, 5, 1, 0, 1].isnan().all() and grad_loc[0, 10:].isfinite().all()


def test_infinite_weights_in_strided_views(backend):
    """The same inputs as views inside NaN-filled buffers: no stray read changes the answer."""
    args = special_inputs()
    args = [inside_poison(a) if a.is_floating_point() else a for a in args]
    compare(args, *backend)


@pytest.mark.parametrize("logit", [float("inf"), -float("inf"), float("nan")])
def test_non_finite_logits_under_softmax(backend, logit):
    """softmax=True: an inf or NaN logit makes its row NaN (softmax's answer), -inf a zero weight."""
    value, shapes, starts, loc, w = random_inputs(1, 3, 2, 3, [(3, 4), (2, 2)], 2, seed=6)
    w = w.log()
    w[0, 1, 0, 1, 0] = logit
    expected = compare([value, shapes, starts, loc, w], *backend, softmax=True)
    assert expected[0][0, 1, :3].isnan().all() == (logit != -float("inf"))


def test_ops_skip_levels_that_do_not_fit_value(backend):
    """Direct calls of the ops with spatial_shapes past value's S read nothing of that level.

    The public entry refuses such calls; the ops themselves must still not read outside
    value (value sits inside a NaN buffer: a stray read would show as NaN).
    """
    name, device = backend
    value, shapes, starts, loc, w = random_inputs(1, 4, 2, 3, [(3, 4), (2, 2)], 2, device=device)
    bad = torch.tensor([[3, 4], [20, 20]], device=device)
    namespace = torch.ops.msda_triton if name == "triton" else torch.ops.msda_ops
    if name == "kernel":
        ms_deform_attn(value, shapes, starts, loc, w, backend="kernel")  # loads the library
    out = namespace.ms_deform_attn_forward(inside_poison(value), bad, starts, loc, w, False)
    w_level0 = w.clone()
    w_level0[:, :, :, 1] = 0
    expected = ms_deform_attn_reference(value, shapes, starts, loc, w_level0)
    assert not out.isnan().any()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_cpu_backward_of_a_skipped_level_is_zero_even_for_infinite_weights() -> None:
    """Direct backward call with a level past value's S: nothing of it is read, so its
    samples get zero location and weight gradients, whatever their weights (inf, NaN
    logits aside); the other level's gradients are those of the reference without it."""
    value, shapes, starts, loc, w = random_inputs(1, 4, 2, 3, [(3, 4), (2, 2)], 2, seed=5)
    ms_deform_attn(value, shapes, starts, loc, w, backend="kernel")  # loads the library
    bad = torch.tensor([[3, 4], [20, 20]])
    w = w.clone()
    w[:, :, :, 1] = float("inf")
    grad_out = torch.randn(1, 4, 2 * 3, dtype=value.dtype)
    g_value, g_loc, g_w = torch.ops.msda_ops.ms_deform_attn_backward(
        grad_out, value, bad, starts, loc, w, False
    )
    assert (g_loc[:, :, :, 1] == 0).all() and (g_w[:, :, :, 1] == 0).all()
    kept = [t.detach().clone().requires_grad_() for t in (value, loc, w)]
    w_level0 = kept[2].clone()
    w_level0.data[:, :, :, 1] = 0
    out = ms_deform_attn_reference(kept[0], shapes, starts, kept[1], w_level0)
    e_value, e_loc, e_w = torch.autograd.grad(out, (kept[0], kept[1], w_level0), grad_out)
    torch.testing.assert_close(g_value, e_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_loc[:, :, :, 0], e_loc[:, :, :, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_w[:, :, :, 0], e_w[:, :, :, 0], rtol=1e-5, atol=1e-6)
