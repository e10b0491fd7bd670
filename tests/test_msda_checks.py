"""Every malformed call raises TypeError/ValueError naming the argument at fault."""

from __future__ import annotations

import pytest
import torch
from msda_ops.testing import random_inputs

from msda_ops import checks, ms_deform_attn

NAMES = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def good():
    """N=2, Lq=3, M=2, D=4, levels (3, 4) and (2, 2), P=2."""
    return dict(zip(NAMES, random_inputs(2, 3, 2, 4, [(3, 4), (2, 2)], 2, seed=0), strict=True))


def replace(**changes):
    return lambda a: {**a, **{k: f(a) for k, f in changes.items()}}


CASES = {
    # ranks
    "value rank": (replace(value=lambda a: a["value"][0]), ValueError, "value", "(N, S, M, D)"),
    "shapes rank": (
        replace(spatial_shapes=lambda a: a["spatial_shapes"].flatten()),
        ValueError,
        "spatial_shapes",
        "(L, 2)",
    ),
    "starts rank": (
        replace(level_start_index=lambda a: a["level_start_index"][None]),
        ValueError,
        "level_start_index",
        "(L,)",
    ),
    "locations rank": (
        replace(sampling_locations=lambda a: a["sampling_locations"][..., 0, :]),
        ValueError,
        "sampling_locations",
        "(N, Lq, M, L, P, 2)",
    ),
    "weights rank": (
        replace(attention_weights=lambda a: a["attention_weights"][..., None]),
        ValueError,
        "attention_weights",
        "(N, Lq, M, L, P)",
    ),
    # sizes that disagree between arguments
    "locations batch": (
        replace(sampling_locations=lambda a: a["sampling_locations"][:1]),
        ValueError,
        "sampling_locations",
        "N from value",
    ),
    "locations heads": (
        replace(sampling_locations=lambda a: a["sampling_locations"][:, :, :1]),
        ValueError,
        "sampling_locations",
        "M from value",
    ),
    "locations levels": (
        replace(sampling_locations=lambda a: a["sampling_locations"][:, :, :, :1]),
        ValueError,
        "sampling_locations",
        "L from spatial_shapes",
    ),
    "locations xyz": (
        replace(sampling_locations=lambda a: torch.cat([a["sampling_locations"]] * 2, -1)[..., :3]),
        ValueError,
        "sampling_locations",
        "coordinates",
    ),
    "weights points": (
        replace(attention_weights=lambda a: a["attention_weights"][..., :1]),
        ValueError,
        "attention_weights",
        "(N, Lq, M, L, P)",
    ),
    "weights queries": (
        replace(attention_weights=lambda a: a["attention_weights"][:, :2]),
        ValueError,
        "attention_weights",
        "(N, Lq, M, L, P)",
    ),
    "shapes columns": (
        replace(spatial_shapes=lambda a: a["spatial_shapes"][:, :1]),
        ValueError,
        "spatial_shapes",
        "(L, 2)",
    ),
    "starts length": (
        replace(level_start_index=lambda a: a["level_start_index"][:1]),
        ValueError,
        "level_start_index",
        "(L,)",
    ),
    # contents of the level description
    "shapes sum": (
        replace(spatial_shapes=lambda a: a["spatial_shapes"] + 1),
        ValueError,
        "spatial_shapes",
        "sum(H*W)",
    ),
    "starts values": (
        replace(level_start_index=lambda a: a["level_start_index"] + 1),
        ValueError,
        "level_start_index",
        "cumulative sum",
    ),
    "zero level": (
        replace(spatial_shapes=lambda a: torch.tensor([[0, 4], [2, 8]])),
        ValueError,
        "spatial_shapes",
        "non-positive",
    ),
    "negative level": (
        replace(spatial_shapes=lambda a: torch.tensor([[-3, -4], [2, 2]])),
        ValueError,
        "spatial_shapes",
        "non-positive",
    ),
    # dtypes and devices
    "int value": (replace(value=lambda a: a["value"].long()), TypeError, "value", "floating-point"),
    "int locations": (
        replace(sampling_locations=lambda a: a["sampling_locations"].int()),
        TypeError,
        "sampling_locations",
        "floating-point",
    ),
    "bool weights": (
        replace(attention_weights=lambda a: a["attention_weights"] > 0),
        TypeError,
        "attention_weights",
        "floating-point",
    ),
    "float shapes": (
        replace(spatial_shapes=lambda a: a["spatial_shapes"].float()),
        TypeError,
        "spatial_shapes",
        "torch.int64",
    ),
    "float starts": (
        replace(level_start_index=lambda a: a["level_start_index"].double()),
        TypeError,
        "level_start_index",
        "torch.int64",
    ),
    "float8 value": (
        replace(value=lambda a: a["value"].to(torch.float8_e4m3fn)),
        TypeError,
        "value",
        "float64, float32, float16 or bfloat16, got torch.float8_e4m3fn",
    ),
    "float8 locations": (
        replace(sampling_locations=lambda a: a["sampling_locations"].to(torch.float8_e5m2)),
        TypeError,
        "sampling_locations",
        "float64, float32, float16 or bfloat16, got torch.float8_e5m2",
    ),
    "float8 weights": (
        replace(attention_weights=lambda a: a["attention_weights"].to(torch.float8_e4m3fn)),
        TypeError,
        "attention_weights",
        "float64, float32, float16 or bfloat16",
    ),
    "not a tensor": (
        replace(spatial_shapes=lambda a: [[3, 4], [2, 2]]),
        TypeError,
        "spatial_shapes",
        "torch.Tensor",
    ),
    "mixed devices": (
        replace(value=lambda a: a["value"].to("meta")),
        ValueError,
        "value on meta",
        "one device",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_names_the_argument(case):
    mutate, error, name, expected = case
    args = mutate(good())
    with pytest.raises(error) as info:
        ms_deform_attn(*(args[n] for n in NAMES))
    message = str(info.value)
    assert name in message and expected in message, message


def test_good_inputs_pass_on_every_cpu_backend():
    """The valid call the cases above break runs, and both CPU backends agree on it."""
    args = good()
    reference = ms_deform_attn(*args.values(), backend="reference")
    kernel = ms_deform_attn(*args.values(), backend="kernel")
    assert reference.shape == (2, 3, 2 * 4)
    assert reference.abs().sum() > 0  # locations inside the maps: a non-trivial output
    torch.testing.assert_close(kernel, reference, rtol=1e-5, atol=1e-6)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*'triton'.*got 'cuda'"):
        ms_deform_attn(*good().values(), backend="cuda")  # type: ignore[arg-type]


def test_device_side_content_checks():
    """The asynchronous checks used on accelerators, run here on CPU tensors (they raise now)."""
    from msda_ops.checks import _queue_device_asserts

    shapes, starts = torch.tensor([[3, 4], [2, 2]]), torch.tensor([0, 12])
    _queue_device_asserts(shapes, starts, 16)
    for bad_shapes, bad_starts, length in [
        (shapes, starts, 17),
        (shapes, starts + 1, 16),
        (torch.tensor([[-3, -4], [2, 2]]), starts, 16),
    ]:
        with pytest.raises(RuntimeError, match="level_start_index"):
            _queue_device_asserts(bad_shapes, bad_starts, length)


@pytest.mark.parametrize("softmax", ["no", 1, None, torch.tensor(True)])
@pytest.mark.parametrize("backend", ["kernel", "reference"])
def test_softmax_must_be_a_bool(softmax, backend):
    with pytest.raises(TypeError, match=r"softmax must be True or False, got "):
        ms_deform_attn(*good().values(), softmax=softmax, backend=backend)


@pytest.mark.parametrize("name", ["value", "sampling_locations", "attention_weights"])
def test_float8_is_refused_before_any_backend_runs(name):
    """Every backend, auto included, refuses float8 with the same message."""
    messages = set()
    for backend in ("auto", "kernel", "reference", "triton"):
        args = good()
        args[name] = args[name].to(torch.float8_e4m3fn)
        with pytest.raises(TypeError) as info:
            ms_deform_attn(*args.values(), backend=backend)
        messages.add(str(info.value))
    assert len(messages) == 1 and name in messages.pop()


def test_level_contents_on_accelerators_are_checked_once_per_tensor(monkeypatch):
    """Off the CPU the contents are queued as a device assert the first time a pair of
    tensor objects is seen, again after an in-place change or for a new tensor; with
    MSDA_OPS_CHECK_LEVELS=1 they are read on the host and checked on every call."""
    queued = []
    monkeypatch.setattr(checks, "_queue_device_asserts", lambda *a: queued.append(a))
    shapes, starts = torch.tensor([[3, 4], [2, 2]]), torch.tensor([0, 12])
    for _ in range(3):
        checks.check_levels_on_device(shapes, starts, 16)
    assert len(queued) == 1
    checks.check_levels_on_device(shapes, starts, 17)  # another S
    starts.add_(0)  # an in-place change bumps the version
    checks.check_levels_on_device(shapes, starts, 16)
    checks.check_levels_on_device(shapes.clone(), starts, 16)  # a new tensor
    checks.check_levels_on_device(shapes, starts.clone(), 16)
    assert len(queued) == 5
    monkeypatch.setenv("MSDA_OPS_CHECK_LEVELS", "1")
    checks.check_levels_on_device(shapes, starts, 16)
    with pytest.raises(ValueError, match="level_start_index is"):
        checks.check_levels_on_device(shapes, starts + 1, 16)
    assert len(queued) == 5


def test_metadata_checks_launch_nothing_on_repeated_calls(monkeypatch):
    """A second call with the same level tensors does no content work at all on a device."""
    calls = []
    monkeypatch.setattr(checks, "check_level_values", lambda *a: calls.append(a))
    monkeypatch.setattr(checks, "_queue_device_asserts", lambda *a: calls.append(a))
    monkeypatch.setattr(checks, "_on_host", lambda t: False)  # as for CUDA tensors
    args = good()
    for _ in range(3):
        checks.check_inputs(*args.values())
    assert len(calls) == 1
