"""Weights that would load as meaningless numbers are refused with a ``WeightsError``
naming the file and the key: integer or bool tensors where the model has floats, and
NaN or infinite values; other float precisions load (cast), as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.tiny import tiny_model

import zoo
from zoo.weights.transformers_format import load_transformers_folder

KEY = "backbone.body.conv1.weight"  # any float parameter


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save_pretrained(tiny_model("ddetr"), tmp_path_factory.mktemp("m") / "model")


def _edited(saved: Path, tmp_path: Path, key: str, change) -> Path:
    folder = tmp_path / "edited"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
    state = load_file(str(saved / "model.safetensors"))
    assert key in state, sorted(state)[:20]
    state[key] = change(state[key])
    save_file(state, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda t: (t * 100).to(torch.int32), "torch.int32"),
        (lambda t: t > 0, "torch.bool"),
    ],
    ids=["int32", "bool"],
)
def test_a_wrong_dtype_is_refused(saved: Path, tmp_path: Path, change, found: str) -> None:
    folder = _edited(saved, tmp_path, KEY, change)
    with pytest.raises(zoo.WeightsError) as err:
        zoo.load(folder)
    message = str(err.value)
    assert str(folder / "model.safetensors") in message and KEY in message
    assert found in message and "torch.float32" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_weights_are_refused(saved: Path, tmp_path: Path, bad: float) -> None:
    def poison(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[3] = bad
        return t

    folder = _edited(saved, tmp_path, KEY, poison)
    with pytest.raises(
        zoo.WeightsError, match=rf"model\.safetensors: {KEY} holds 1 NaN or infinite"
    ):
        zoo.load(folder)


def test_other_float_precisions_still_load(saved: Path, tmp_path: Path) -> None:
    folder = _edited(saved, tmp_path, KEY, lambda t: t.half())
    model = zoo.load(folder)
    want = load_file(str(saved / "model.safetensors"))[KEY].half().float()
    assert torch.equal(model.state_dict()[KEY], want)


def test_transformers_folders_are_checked_too(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from support.transformers_models import build_hf

    folder = tmp_path / "hf"
    build_hf("ddetr", seed=0).save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    state[key] = state[key].to(torch.int64)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(zoo.WeightsError, match=r"model\.safetensors: .* holds torch\.int64"):
        load_transformers_folder(folder)
