"""The Triton backend against the float64 reference: CPU through Triton's interpreter in
``make test`` (a child process, see tests/support/triton_interpreter.py), natively on CUDA
in ``make test-gpu`` (the ``gpu`` cases).

The interpreter neither catches stray reads nor runs programs concurrently, so inputs sit
as strided views inside NaN-filled buffers (a read that a mask should have stopped turns
the result to NaN) and the value gradient's atomics are checked on maps so small that many
samples share a pixel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from msda_ops.testing import random_inputs
from support.msda_compare import (
    assert_matches,
    float64_oracle,
    forward_and_grads,
    inside_poison,
)
from support.triton_interpreter import DEVICES, interpreting, require, run_interpreter_cases

from msda_ops import MSDeformAttn, level_start_index, ms_deform_attn, ms_deform_attn_reference

HALF_TYPES = (torch.float32, torch.float16, torch.bfloat16)
TESTS = Path(__file__).resolve().parent


@pytest.fixture(params=DEVICES)
def device(request):
    return require(request.param)


def test_interpreter_cases():
    """Every CPU case below and in the other files of the Triton backend, in Triton's
    interpreter (one child process for all)."""
    files = ("triton", "softmax", "edge_cases", "triton_tuning")
    run_interpreter_cases(*(TESTS / f"test_msda_{name}.py" for name in files))


def triton(*args, **kw):
    return ms_deform_attn(*args, backend="triton", **kw)


def check_against_oracle(args, dtype, softmax=False, grad_output=None):
    if grad_output is None:
        n, lq, m, d = args[3].shape[0], args[3].shape[1], args[0].shape[2], args[0].shape[3]
        gen = torch.Generator().manual_seed(3)
        grad_output = torch.randn(n, lq, m * d, generator=gen).to(args[0])
    out, grads = forward_and_grads(triton, args, grad_output, softmax=softmax)
    assert out.dtype == args[0].dtype
    expected, expected_grads = float64_oracle(args, grad_output, softmax=softmax)
    assert_matches(out, expected, dtype, "output")
    for name, got, exp, arg in zip(
        ("grad_value", "grad_locations", "grad_weights"),
        grads,
        expected_grads,
        (args[0], args[3], args[4]),
        strict=True,
    ):
        assert got.dtype == arg.dtype, name
        assert_matches(got, exp, dtype, name)


# (N, Lq, M, D, levels, P): D in {1, 3, 32, 33}, L from 1 to 5, P from 1 to 8.
CASES = {
    "D1-L1-P1": (2, 3, 1, 1, [(3, 4)], 1),
    "D3-L2-P8": (1, 5, 2, 3, [(4, 5), (2, 3)], 8),
    "D32-L4-P4": (2, 7, 2, 32, [(6, 5), (3, 3), (2, 1), (1, 1)], 4),
    "D33-L5-P3": (1, 4, 3, 33, [(3, 3), (2, 4), (1, 2), (2, 2), (1, 1)], 3),
    "D3-L3-P5": (3, 9, 1, 3, [(1, 7), (5, 1), (2, 2)], 5),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_float32_sizes(device, case):
    n, lq, m, d, levels, p = case
    args = random_inputs(
        n, lq, m, d, levels, p, device=device, spread=0.3, seed=len(levels), requires_grad=True
    )
    check_against_oracle(args, torch.float32)


@pytest.mark.parametrize("dtype", HALF_TYPES, ids=str)
def test_dtypes(device, dtype):
    args = random_inputs(
        2, 6, 2, 5, [(4, 6), (2, 3)], 3, dtype=dtype, device=device, spread=0.2, seed=5,
        requires_grad=True,
    )  # fmt: skip
    check_against_oracle(args, dtype)


def test_mixed_dtypes_under_autocast(device):
    """A half value with float32 locations and weights, as autocast leaves them."""
    value, shapes, starts, loc, w = random_inputs(1, 4, 2, 4, [(3, 3)], 2, device=device, seed=2)
    args = (value.half().requires_grad_(), shapes, starts, loc.requires_grad_(), w.requires_grad_())
    check_against_oracle(args, torch.float16)


def test_views_inside_nan_buffers(device):
    """Strided, offset inputs (and grad_output) whose gaps are NaN: results stay exact."""
    args = random_inputs(2, 5, 2, 3, [(3, 4), (2, 2)], 3, device=device, spread=0.2, seed=9)
    poisoned = [inside_poison(a) for a in args]
    for i in (0, 3, 4):
        poisoned[i].requires_grad_()
    dense = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1))
    grad_output = inside_poison(dense.to(device))
    check_against_oracle(poisoned, torch.float32, grad_output=grad_output)
    check_against_oracle(poisoned, torch.float32, softmax=True, grad_output=grad_output)


@pytest.mark.parametrize("sizes", [(0, 4), (2, 0)], ids=["N0", "Lq0"])
def test_empty(device, sizes):
    n, lq = sizes
    args = random_inputs(n, lq, 2, 3, [(3, 3), (1, 2)], 2, device=device, requires_grad=True)
    out, grads = forward_and_grads(triton, args)
    assert out.shape == (n, lq, 6)
    for grad, arg in zip(grads, (args[0], args[3], args[4]), strict=True):
        assert grad.shape == arg.shape
        assert not grad.any()


def test_float64_is_refused_with_the_alternatives(device):
    args = random_inputs(1, 2, 1, 2, [(2, 2)], 1, dtype=torch.float64, device=device)
    with pytest.raises(TypeError, match=r"value of dtype torch.float64.*'kernel'.*'reference'"):
        triton(*args)


def test_non_finite_locations_follow_the_nan_rule(device):
    """NaN locations, weights and values: NaN where the reference has NaN, equal elsewhere;
    infinite and far-away locations contribute zero."""
    value, shapes, starts, loc, w = random_inputs(
        1, 8, 2, 3, [(4, 4), (2, 3)], 2, device=device, seed=4
    )
    special = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 2.0**62]
    for q, x in enumerate(special):
        loc[0, q, 0, q % 2, 0, q % 2] = x
    w[0, 6, 1, 0, 1] = float("nan")
    value[0, 5, 1, 2] = float("nan")  # a pixel of level 0, read by some samples of head 1
    args = (value.requires_grad_(), shapes, starts, loc.requires_grad_(), w.requires_grad_())
    grad_output = torch.ones(1, 8, 6, device=device)
    out, grads = forward_and_grads(triton, args, grad_output)
    expected, expected_grads = float64_oracle(args, grad_output)
    assert expected.isnan().any() and expected_grads[1].isnan().any()  # the test can fail
    names = ("grad_value", "grad_locations", "grad_weights")
    pairs = [("output", out, expected), *zip(names, grads, expected_grads, strict=True)]
    for name, got, exp in pairs:
        if name == "grad_locations":  # grid_sample makes only one of (x, y) NaN
            got, exp = got.isnan().any(-1), exp.isnan().any(-1)
            assert torch.equal(got.cpu(), exp.cpu()), name
            continue
        assert torch.equal(got.isnan().cpu(), exp.isnan().cpu()), name
        finite = ~exp.isnan()
        torch.testing.assert_close(got[finite].double(), exp[finite], rtol=1e-5, atol=1e-5)
    # Head 0 of queries 1..5 has an infinite or far location and no NaN input: finite.
    assert not out[0, 1:6, :3].isnan().any()


def test_int64_offsets_past_2_31(device):
    """Image 2 of value lies 2**31 elements into its storage: int32 offsets would wrap."""
    stride = 2**30 + 8
    n, m, d, levels = 3, 2, 4, [(3, 3)]
    length = 9
    try:
        storage = torch.empty(2 * stride + length * m * d, dtype=torch.float16, device=device)
    except (RuntimeError, MemoryError):  # pragma: no cover - a machine without 4 GiB
        pytest.skip("cannot reserve 4 GiB of address space")
    value = storage.as_strided((n, length, m, d), (stride, m * d, d, 1))
    dense = torch.randn(n, length, m, d, generator=torch.Generator().manual_seed(0))
    value.copy_(dense)
    _, shapes, starts, loc, w = random_inputs(n, 2, m, d, levels, 2, device=device, seed=1)
    out = triton(value, shapes, starts, loc.half(), w.half())
    expected = ms_deform_attn_reference(dense.double(), shapes.cpu(), starts.cpu(),
                                        loc.half().double().cpu(), w.half().double().cpu())  # fmt: skip
    assert_matches(out.cpu(), expected, torch.float16, "output")


def _module_inputs(device):
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2], [1, 1]], device=device)
    length = int((shapes[:, 0] * shapes[:, 1]).sum())
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(2, 5, 32, generator=gen).to(device)
    reference = torch.rand(2, 5, 4, 2, generator=gen).to(device)
    features = torch.randn(2, length, 32, generator=gen).to(device)
    return query, reference, features, shapes, level_start_index(shapes)


def test_opcheck(device):
    args = random_inputs(2, 3, 2, 3, [(3, 4), (1, 2)], 2, device=device, spread=0.2,
                         requires_grad=True)  # fmt: skip
    forward = torch.ops.msda_triton.ms_deform_attn_forward.default
    backward = torch.ops.msda_triton.ms_deform_attn_backward.default
    triton(*args)  # imports the backend (registers the ops)
    torch.library.opcheck(forward, (*args, True))
    grad_output = torch.randn(2, 3, 6, device=device)
    detached = [a.detach() for a in args]
    torch.library.opcheck(backward, (grad_output, *detached, False))


def test_compile_fullgraph_and_export_keep_the_op(device):
    torch._dynamo.reset()
    attn = MSDeformAttn(d_model=32, n_heads=4, n_points=2).to(device)
    inputs = _module_inputs(device)
    with torch.no_grad():
        torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)  # non-uniform softmax
    from msda_ops import use_backend

    with use_backend("triton"):
        eager = attn(*inputs)
        compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")(*inputs)
        program = torch.export.export(attn, inputs)
    with use_backend("reference"):
        expected = attn(*inputs)
    torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    targets = {node.target for node in program.graph.nodes}
    assert torch.ops.msda_triton.ms_deform_attn_forward.default in targets


def test_double_backward_raises_clearly(device):
    args = random_inputs(1, 2, 1, 2, [(2, 2)], 1, device=device, requires_grad=True)
    out = triton(*args)
    (grad_value,) = torch.autograd.grad(out.square().sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad_value.sum().backward()


def test_deterministic_mode_alerts(device):
    args = random_inputs(1, 2, 1, 2, [(2, 2)], 1, device=device, requires_grad=True)
    out = triton(*args)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match=r"triton backward .* not deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


# (which kernel, dtype, sm) x (Lq, L*P, D): the encoder shape, and a wide odd one.
COMPILE_CASES = [
    ("forward", "fp32", 90, (22223, 16, 32)),
    ("backward", "fp32", 90, (22223, 16, 32)),
    ("forward", "bf16", 90, (300, 16, 32)),
    ("backward", "bf16", 90, (300, 16, 32)),
    ("backward", "fp16", 80, (300, 16, 32)),
    ("backward", "fp32", 90, (900, 40, 33)),
]


@pytest.mark.parametrize(
    "case", COMPILE_CASES, ids=[f"{w}-{t}-sm{a}-lp{s[1]}" for w, t, a, s in COMPILE_CASES]
)
def test_kernels_compile_for_the_gpu_without_spills(case):
    """Native compilation (PTX through ptxas, no GPU needed) at the backend's launch shapes:
    the interpreter does not compile, and register spills would slow the GPU down."""
    pytest.importorskip("triton")
    if interpreting():
        pytest.skip("the kernels are interpreted in this process")
    from support.triton_compile import compile_report

    which, dtype, arch, (queries, samples, channels) = case
    report = compile_report(which, dtype, True, queries, samples, channels, arch)
    assert report.spill_bytes == 0, report
