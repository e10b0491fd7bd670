"""The pure-PyTorch reference against an independent per-sample loop and hand-computed values.

The reference is the oracle of the kernel tests, so it is itself checked here against the
semantics written out longhand: pixel (x*W - 0.5, y*H - 0.5), bilinear, zero outside.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from msda_ops.testing import level_start_index, random_inputs

from msda_ops import ms_deform_attn_reference


def naive_msda(value, spatial_shapes, sampling_locations, attention_weights):
    """One sample and one corner at a time, in float64: (N, Lq, M * D)."""
    n, _, m, d = value.shape
    _, lq, _, _, n_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    value = value.detach().double()
    sampling_locations, attention_weights = sampling_locations.detach(), attention_weights.detach()
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                start = 0
                for lvl, (height, width) in enumerate(shapes):
                    for p in range(n_points):
                        x, y = sampling_locations[b, q, h, lvl, p].tolist()
                        attn = float(attention_weights[b, q, h, lvl, p])
                        px, py = x * width - 0.5, y * height - 0.5
                        x0, y0 = math.floor(px), math.floor(py)
                        fx, fy = px - x0, py - y0
                        corners = [
                            (y0, x0, (1 - fy) * (1 - fx)),
                            (y0, x0 + 1, (1 - fy) * fx),
                            (y0 + 1, x0, fy * (1 - fx)),
                            (y0 + 1, x0 + 1, fy * fx),
                        ]
                        for row, col, weight in corners:
                            if 0 <= row < height and 0 <= col < width:
                                pixel = value[b, start + row * width + col, h]
                                out[b, q, h] += attn * weight * pixel
                    start += height * width
    return out.view(n, lq, m * d)


@st.composite
def tiny_problems(draw):
    shapes = draw(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=3))
    return {
        "batch": draw(st.integers(1, 2)),
        "queries": draw(st.integers(1, 3)),
        "heads": draw(st.integers(1, 2)),
        "channels": draw(st.sampled_from([1, 3])),
        "shapes": shapes,
        "points": draw(st.integers(1, 3)),
        "spread": draw(st.sampled_from([0.0, 0.6])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=25, deadline=None)
@given(problem=tiny_problems())
def test_reference_matches_naive_loop(problem):
    value, shapes, starts, locations, weights = random_inputs(**problem, dtype=torch.float64)
    got = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    expected = naive_msda(value, shapes, locations, weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def _single(value_hw, x, y):
    """Sample one (H, W) map at one location with weight 1."""
    height, width = value_hw.shape
    value = value_hw.reshape(1, height * width, 1, 1).double()
    shapes = torch.tensor([[height, width]])
    loc = torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1, dtype=torch.float64)
    return float(ms_deform_attn_reference(value, shapes, level_start_index(shapes), loc, weights))


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (0.25, 0.25, 1.0),  # pixel (0, 0) centre
        (0.75, 0.25, 2.0),  # pixel (0, 1) centre
        (0.5, 0.5, 2.5),  # middle: mean of all four
        (0.5, 0.25, 1.5),  # between (0, 0) and (0, 1)
        (0.0, 0.0, 0.25),  # corner of the map: 3 of 4 neighbours are outside
        (1.0, 1.0, 1.0),  # opposite corner: a quarter of pixel (1, 1) = 4
        (-0.25, 0.25, 0.0),  # a whole pixel to the left: nothing inside
        (1.25, 0.75, 0.0),
    ],
)
def test_reference_hand_computed(x, y, expected):
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert _single(image, x, y) == pytest.approx(expected, abs=1e-12)


def test_reference_non_finite_locations_follow_the_nan_rule():
    """Query 0 samples at x = NaN: NaN output and weight gradient. Queries 1-5 sample at
    x = +inf, -inf, 1e30, -1e30, 2**62: nothing is read, output and gradients exactly 0
    (grid_sample alone would give NaN for the infinite ones)."""
    value, shapes, starts, locations, weights = random_inputs(
        1, 6, 1, 3, [(4, 4), (2, 3)], 1, dtype=torch.float64
    )
    far = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 2.0**62])
    locations[..., 0] = far.view(1, 6, 1, 1, 1)
    for t in (value, locations, weights):
        t.requires_grad_()
    out = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    assert out[0, 0].isnan().all()
    assert torch.equal(out[0, 1:], torch.zeros_like(out[0, 1:]))
    grad_value, grad_loc, grad_w = torch.autograd.grad(
        out[0, 1:].sum(), (value, locations, weights), retain_graph=True
    )
    assert not grad_value.any()
    for grad in (grad_loc, grad_w):  # the NaN location's own gradient may be NaN
        assert torch.equal(grad[0, 1:], torch.zeros_like(grad[0, 1:]))
    (grad_w,) = torch.autograd.grad(out[0, 0].sum(), weights)
    assert grad_w[0, 0].isnan().all() and not grad_w[0, 1:].any()


def test_reference_softmax_normalises_over_levels_and_points():
    """softmax=True equals weights normalised by hand over the L*P samples of each head."""
    value, shapes, starts, locations, _ = random_inputs(2, 3, 2, 3, [(3, 4), (2, 2)], 3)
    logits = torch.randn(2, 3, 2, 2, 3, dtype=torch.float64, generator=torch.Generator())
    exp = logits.exp()
    weights = exp / exp.sum(dim=(-2, -1), keepdim=True)
    args = (value.double(), shapes, starts, locations.double())
    got = ms_deform_attn_reference(*args, logits, softmax=True)
    expected = naive_msda(value.double(), shapes, locations.double(), weights)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
