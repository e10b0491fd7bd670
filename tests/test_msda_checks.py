"""Every malformed call raises TypeError/ValueError naming the argument at fault."""

from __future__ import annotations

import pytest
import torch
from msda_ops.testing import random_inputs

from msda_ops import ms_deform_attn

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
