"""Property tests of two public entry points on generated bad input (hypothesis).

``zoo.load`` on a saved folder mutated at random (config fields deleted, retyped, out of
range; junk JSON; truncated or corrupted safetensors; random bytes as a ``.pth``; an
official checkpoint with tensors deleted or cut): it
loads or raises ``zoo.WeightsError`` naming the file, never another exception.
``predict`` on random image-like inputs (shapes with 0, 1 and extreme aspect ratios,
dtypes, PIL modes, value ranges): valid ones give well-formed detections, invalid ones
``TypeError``/``ValueError`` naming the argument. The validity oracle below is written
from the documented contract, not from the code.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.tiny import NUM_CLASSES, TINY, tiny_model

import zoo

# Small enough for ~100 cases in a few seconds each way (a width-8 ResNet-18).
WIDTH = 8
SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_model("ddetr", width=WIDTH, class_names=[f"c{k}" for k in range(NUM_CLASSES)])
    return zoo.save_pretrained(model, tmp_path_factory.mktemp("saved") / "tiny")


# --- zoo.load on mutated folders -------------------------------------------------------

json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def config_mutations(draw: st.DrawFn, data: dict[str, Any]) -> tuple[list[str], Any]:
    """A path into ``config.json`` (top level, config, config.backbone or config.loss) and
    a new value (``"<delete>"`` removes the key)."""
    where = draw(st.sampled_from(["top", "config", "backbone", "loss"]))
    if where == "top":
        keys, prefix = list(data), []
    elif where == "config":
        keys, prefix = list(data["config"]), ["config"]
    else:
        keys, prefix = list(data["config"][where]), ["config", where]
    key = draw(st.sampled_from(keys))
    value = draw(st.one_of(st.just("<delete>"), json_values))
    return [*prefix, key], value


def _mutate(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node[key]
    if value == "<delete>":
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def _load_or_documented_error(folder: Path, named: Path, **overrides: Any) -> str:
    """``"loaded"`` or ``"refused"``; any other outcome fails the test."""
    try:
        model = zoo.load(folder, **overrides)
    except zoo.WeightsError as e:
        assert str(named) in str(e) or str(folder) in str(e), str(e)
        return "refused"
    assert isinstance(model, torch.nn.Module)
    return "loaded"


LOAD_CASES: dict[str, int] = {}


@SETTINGS
@given(data=st.data())
def test_load_on_mutated_config_json(saved: Path, data: st.DataObject) -> None:
    original = json.loads((saved / "config.json").read_text())
    path, value = data.draw(config_mutations(original))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model.safetensors").symlink_to(saved / "model.safetensors")
        mutated = json.loads(json.dumps(original))
        _mutate(mutated, path, value)
        (folder / "config.json").write_text(json.dumps(mutated))
        outcome = _load_or_documented_error(folder, folder / "config.json")
    LOAD_CASES[outcome] = LOAD_CASES.get(outcome, 0) + 1


@SETTINGS
@given(
    kind=st.sampled_from(["truncate", "flip", "junk-config", "random-pth"]),
    cut=st.floats(0, 1),
    junk=st.binary(max_size=64),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_load_on_corrupt_files(
    saved: Path, kind: str, cut: float, junk: bytes, flips: list[tuple[float, int]]
) -> None:
    weights = (saved / "model.safetensors").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
        named = folder / "model.safetensors"
        if kind == "truncate":
            named.write_bytes(weights[: int(cut * (len(weights) - 1))])
        elif kind == "flip":
            # Mostly in the header (its first kilobytes), where corruption is not silent.
            corrupt = bytearray(weights)
            for where, byte in flips:
                corrupt[int(where * 2000)] = byte
            named.write_bytes(bytes(corrupt))
        elif kind == "junk-config":
            (folder / "config.json").write_bytes(junk)
            named = folder / "config.json"
        else:
            named = folder / "weights.pth"
            named.write_bytes(junk)
            folder = named
        if kind != "random-pth":
            (folder / "model.safetensors").exists() or named.write_bytes(weights)
        outcome = _load_or_documented_error(folder, named)
    LOAD_CASES[f"{kind}:{outcome}"] = LOAD_CASES.get(f"{kind}:{outcome}", 0) + 1


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    from support.transformers_models import build_hf, to_official

    return to_official(build_hf("ddetr-refine", seed=2).state_dict(), deformable=True)


@settings(SETTINGS, max_examples=15)
@given(
    drop=st.lists(st.floats(0, 1), max_size=3),
    reshape=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3)), max_size=2),
)
def test_load_on_mutated_official_checkpoints(
    official_state: dict[str, torch.Tensor],
    drop: list[float],
    reshape: list[tuple[float, int]],
) -> None:
    """Keys deleted, tensors cut to another length: loads or names the file."""
    keys = sorted(official_state)
    state = dict(official_state)
    for where in drop:
        state.pop(keys[int(where * (len(keys) - 1))], None)
    for where, length in reshape:
        key = keys[int(where * (len(keys) - 1))]
        if key in state and state[key].dim() > 0:
            state[key] = state[key][:length]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pth"
        torch.save({"model": state}, path)
        # An official .pth does not record the head count.
        outcome = _load_or_documented_error(path, path, nheads=TINY["nheads"])
    LOAD_CASES[f"official:{outcome}"] = LOAD_CASES.get(f"official:{outcome}", 0) + 1


# --- predict on random image-like inputs ------------------------------------------------

sides = st.one_of(st.integers(0, 3), st.integers(4, 120), st.sampled_from([1000, 3000]))
TENSOR_DTYPES = [torch.uint8, torch.uint8, torch.uint16, torch.int16, torch.int64, torch.bool]
TENSOR_DTYPES += [torch.float16, torch.float32, torch.float32, torch.float64]
PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"]


@st.composite
def image_like(draw: st.DrawFn) -> tuple[Any, bool]:
    """An image-like input and whether the documented contract accepts it."""
    kind = draw(st.sampled_from(["tensor", "tensor", "array", "array", "pil", "pil", "other"]))
    h, w = draw(sides), draw(sides)
    if h * w > 200_000:
        w = 1  # extreme aspect ratios, not huge images
    if kind == "other":
        return draw(st.sampled_from([None, 3, "", [], 2.5, {"a": 1}])), False
    if kind == "pil":
        mode = draw(st.sampled_from(PIL_MODES))
        h, w = max(h, 1), max(w, 1)  # PIL has no empty images
        scale = draw(st.sampled_from([1.0, 255.0, 65535.0, 70000.0]))
        values = np.random.default_rng(h * w).random((h, w)) * scale
        if mode in ("I;16", "I", "F"):
            dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
            image = Image.fromarray(values.astype(dtype))  # PIL picks the mode
            assert image.mode == mode
            # uint16 holds only 0-65535 (astype wraps); int32 can exceed it, float 1.
            valid = {"I;16": True, "I": scale <= 65535.0, "F": scale <= 1.0}[mode]
            return image, valid
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L").convert(mode)
        return image, True
    dtype = draw(st.sampled_from(TENSOR_DTYPES))
    scale = draw(st.sampled_from([1.0, 1.0, 255.0, -1.0, math.nan]))
    channels = draw(st.sampled_from([3, 3, None, 1, 4, 5]))
    if kind == "tensor":
        shape = (h, w) if channels is None else (channels, h, w)
        channels_ok = channels in (None, 1, 3)
    else:
        shape = (h, w) if channels is None else (h, w, channels)
        channels_ok = channels in (None, 1, 3, 4)
    base = torch.rand(shape, generator=torch.Generator().manual_seed(h + 7 * w)) * scale
    if dtype.is_floating_point:
        pixels = base.to(dtype)
        range_ok = scale == 1.0
    else:
        pixels = base.nan_to_num(0).clamp(0, 255).to(torch.int64).to(dtype)
        range_ok = dtype in (torch.uint8, torch.uint16)
    image: Any = pixels if kind == "tensor" else pixels.numpy()
    return image, channels_ok and range_ok and h > 0 and w > 0


PREDICT_CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("ddetr", width=WIDTH, class_names=[f"c{k}" for k in range(NUM_CLASSES)])


@settings(SETTINGS, max_examples=150)
@given(case=image_like(), threshold=st.sampled_from([0.0, 0.3]))
def test_predict_on_random_image_like_inputs(
    model: torch.nn.Module, case: tuple[Any, bool], threshold: float
) -> None:
    image, valid = case
    if not valid:
        with pytest.raises((TypeError, ValueError), match="image"):
            model.predict(image, threshold=threshold, shortest_edge=96, longest_edge=160)
        PREDICT_CASES["refused"] = PREDICT_CASES.get("refused", 0) + 1
        return
    (pred,) = model.predict(image, threshold=threshold, shortest_edge=96, longest_edge=160)
    if isinstance(image, Image.Image):
        h, w = image.height, image.width
    elif isinstance(image, np.ndarray):
        h, w = image.shape[:2]
    else:
        h, w = image.shape[-2:]
    boxes, scores = pred["boxes"], pred["scores"]
    assert boxes.shape == (len(scores), 4) and len(pred["labels"]) == len(scores)
    assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
    assert ((scores > threshold) & (scores <= 1)).all()
    assert ((pred["labels"] >= 0) & (pred["labels"] < NUM_CLASSES)).all()
    assert pred["names"] == [f"c{k}" for k in pred["labels"].tolist()]
    PREDICT_CASES["detected"] = PREDICT_CASES.get("detected", 0) + 1


def test_the_image_strategy_reaches_both_sides_of_the_oracle() -> None:
    """``image_like`` draws inputs the contract accepts and inputs it refuses."""
    from hypothesis import find

    assert find(image_like(), lambda case: case[1])[1]
    assert not find(image_like(), lambda case: not case[1])[1]


def test_every_property_saw_both_outcomes() -> None:
    """Run after the properties above (file order): a property whose cases all went one way
    (every mutated config refused, every image refused...) tested half its contract.
    ``pytest -s`` prints the counts."""
    if not LOAD_CASES or not PREDICT_CASES:
        pytest.skip("the property tests of this file did not all run in this session")
    print(f"\nzoo.load cases: {LOAD_CASES}\npredict cases: {PREDICT_CASES}")
    for outcome in ("loaded", "refused", "official:loaded", "official:refused"):
        assert LOAD_CASES.get(outcome, 0) > 0, (outcome, LOAD_CASES)
    for kind in ("truncate", "random-pth", "flip", "junk-config"):
        assert LOAD_CASES.get(f"{kind}:refused", 0) > 0, (kind, LOAD_CASES)
    assert PREDICT_CASES.get("detected", 0) > 0 and PREDICT_CASES.get("refused", 0) > 0
