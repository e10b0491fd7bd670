"""MSDeformAttn: original initialisation, forward against a longhand composition, options."""

from __future__ import annotations

import math

import pytest
import torch
from msda_ops.testing import level_start_index
from test_msda_reference import naive_msda

from msda_ops import MSDeformAttn

SHAPES = torch.tensor([[4, 5], [2, 3], [1, 1]])


def expected_offset_bias(n_heads, n_levels, n_points):
    """The original ring of directions, written out one entry at a time."""
    bias = []
    for head in range(n_heads):
        theta = head * 2.0 * math.pi / n_heads
        cos, sin = math.cos(theta), math.sin(theta)
        scale = max(abs(cos), abs(sin))
        for _ in range(n_levels):
            for point in range(n_points):
                bias += [cos / scale * (point + 1), sin / scale * (point + 1)]
    return torch.tensor(bias)


@pytest.mark.parametrize(
    ("d_model", "n_levels", "n_heads", "n_points"), [(256, 4, 8, 4), (12, 3, 3, 2)]
)
def test_initialisation_matches_original(d_model, n_levels, n_heads, n_points):
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
    assert attn.sampling_offsets.weight.shape == (n_heads * n_levels * n_points * 2, d_model)
    assert attn.attention_weights.weight.shape == (n_heads * n_levels * n_points, d_model)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    torch.testing.assert_close(
        attn.sampling_offsets.bias, expected_offset_bias(n_heads, n_levels, n_points)
    )
    for zero in (
        attn.attention_weights.weight,
        attn.attention_weights.bias,
        attn.value_proj.bias,
        attn.output_proj.bias,
    ):
        assert torch.count_nonzero(zero) == 0
    bound = math.sqrt(6.0 / (2 * d_model))  # xavier_uniform on a square matrix
    for proj in (attn.value_proj, attn.output_proj):
        weight = proj.weight
        assert weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def longhand(attn, query, reference_points, features, padding_mask=None):
    """MSDeformAttn.forward re-derived from the paper's equations, sampling with naive_msda."""
    n, len_q, _ = query.shape
    m, n_levels, n_points = attn.n_heads, attn.n_levels, attn.n_points
    value = features @ attn.value_proj.weight.T + attn.value_proj.bias
    if padding_mask is not None:
        value = value * (~padding_mask)[..., None]
    value = value.view(n, features.shape[1], m, -1)
    offsets = (query @ attn.sampling_offsets.weight.T + attn.sampling_offsets.bias).view(
        n, len_q, m, n_levels, n_points, 2
    )
    logits = (query @ attn.attention_weights.weight.T + attn.attention_weights.bias).view(
        n, len_q, m, -1
    )
    weights = (logits.exp() / logits.exp().sum(-1, keepdim=True)).view(
        n, len_q, m, n_levels, n_points
    )
    locations = torch.empty_like(offsets)
    for lvl in range(n_levels):
        height, width = SHAPES[lvl].tolist()
        ref = reference_points[:, :, lvl]
        if ref.shape[-1] == 2:
            locations[:, :, :, lvl, :, 0] = (
                ref[:, :, None, None, 0] + offsets[:, :, :, lvl, :, 0] / width
            )
            locations[:, :, :, lvl, :, 1] = (
                ref[:, :, None, None, 1] + offsets[:, :, :, lvl, :, 1] / height
            )
        else:
            half_size = ref[:, :, None, None, 2:] * 0.5
            locations[:, :, :, lvl] = (
                ref[:, :, None, None, :2] + offsets[:, :, :, lvl] / n_points * half_size
            )
    sampled = naive_msda(value, SHAPES, locations, weights)
    return (
        sampled.to(query.dtype) @ attn.output_proj.weight.T + attn.output_proj.bias,
        locations,
        weights,
    )


def make_case(box, seed=0):
    gen = torch.Generator().manual_seed(seed)
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2).double()
    with torch.no_grad():  # non-trivial offsets and weights: the initial ones are too regular
        for p in attn.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    length = int((SHAPES[:, 0] * SHAPES[:, 1]).sum())
    query = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64)
    features = torch.randn(2, length, 8, generator=gen, dtype=torch.float64)
    ref = torch.rand(2, 3, 3, 4 if box else 2, generator=gen, dtype=torch.float64)
    return attn, query, ref, features


@pytest.mark.parametrize("box", [False, True], ids=["points", "boxes"])
def test_forward_matches_longhand(box):
    attn, query, ref, features = make_case(box)
    out, locations, weights = attn(
        query, ref, features, SHAPES, level_start_index(SHAPES), return_sampling=True
    )
    expected, expected_locations, expected_weights = longhand(attn, query, ref, features)
    assert out.shape == query.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(locations, expected_locations, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(2, 3, 2, dtype=torch.float64))
    torch.testing.assert_close(attn(query, ref, features, SHAPES, level_start_index(SHAPES)), out)


def test_padding_mask_zeroes_padded_values():
    attn, query, ref, features = make_case(box=False, seed=1)
    mask = torch.zeros(2, features.shape[1], dtype=torch.bool)
    mask[0, 15:] = True
    mask[1, ::3] = True
    starts = level_start_index(SHAPES)
    out = attn(query, ref, features, SHAPES, starts, mask)
    torch.testing.assert_close(
        out, longhand(attn, query, ref, features, mask)[0], rtol=0, atol=1e-10
    )
    # Whatever the padded features hold, the output does not change.
    noisy = features.masked_fill(mask[..., None], 1e3)
    torch.testing.assert_close(
        attn(query, ref, noisy, SHAPES, starts, mask), out, rtol=0, atol=1e-10
    )


def test_gradients_reach_every_parameter():
    attn, query, ref, features = make_case(box=True, seed=2)
    attn(query, ref, features, SHAPES, level_start_index(SHAPES)).square().sum().backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)
    attn, query, _, features = make_case(box=False)
    with pytest.raises(ValueError, match="reference_points"):
        attn(query, torch.rand(2, 3, 3, 3), features, SHAPES, level_start_index(SHAPES))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_heads": 0}, "n_heads must be a positive int, got 0"),
        ({"n_levels": 0}, "n_levels must be a positive int, got 0"),
        ({"n_points": -1}, "n_points must be a positive int, got -1"),
        ({"d_model": 0}, "d_model must be a positive int, got 0"),
        ({"n_heads": 2.0}, "n_heads must be a positive int, got 2.0"),
    ],
)
def test_constructor_names_the_bad_size(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSDeformAttn(**{"d_model": 8, **kwargs})


def test_forward_names_the_input_that_does_not_fit_the_layer():
    attn, query, ref, features = make_case(box=False)
    start = level_start_index(SHAPES)
    cases = [
        (
            (query, ref, features, SHAPES[:2], start[:2]),
            r"input_spatial_shapes must be \(n_levels=3",
        ),
        (
            (query, ref, features, SHAPES, start[:2]),
            r"input_level_start_index must be \(n_levels=3",
        ),
        ((query[..., :6], ref, features, SHAPES, start), r"query must be \(N, L, d_model=8\)"),
        (
            (query, ref, features[..., :6], SHAPES, start),
            r"input_flatten must be \(N, L, d_model=8",
        ),
        ((query, ref[:, :, :2], features, SHAPES, start), r"reference_points must be \(N=2, Lq=3"),
        ((query[:1], ref[:1], features, SHAPES, start), "same batch size"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            attn(*args)
    with pytest.raises(ValueError, match=r"input_padding_mask must be \(N, S\)"):
        attn(query, ref, features, SHAPES, start, torch.zeros(2, 5, dtype=torch.bool))


def test_state_dict_keys_are_the_original_names():
    keys = set(MSDeformAttn().state_dict())
    assert keys == {
        f"{layer}.{p}"
        for layer in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for p in ("weight", "bias")
    }
