"""``zoo.load`` on broken folders and files: every error names the file, the field, the
value and what is allowed, as one documented type (``zoo.WeightsError``, a ValueError)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from support.tiny import tiny_model

import zoo


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save_pretrained(tiny_model("ddetr"), tmp_path_factory.mktemp("saved") / "tiny")


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def _edit(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    replaced = change(data)
    path.write_text(json.dumps(data if replaced is None else replaced))


CONFIG_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("list", lambda d: [d], "expected a JSON object"),
    ("no config", lambda d: d.pop("config") and None, "config must be a JSON object"),
    ("no family", lambda d: d.pop("family") and None, "family must be one of"),
    ("no backbone", lambda d: d["config"].pop("backbone") and None, "missing the field.*backbone"),
    ("no loss", lambda d: d["config"].pop("loss") and None, "missing the field.*loss"),
    ("string size", lambda d: d["config"].update(hidden_dim="64"), "hidden_dim must be an int"),
    ("no heads", lambda d: d["config"].update(nheads=0), "nheads must be an int >= 1, got 0"),
    ("no classes", lambda d: d["config"].update(num_classes=0), "num_classes must be an int >= 1"),
    ("no queries", lambda d: d["config"].update(num_queries=0), "num_queries must be an int >= 1"),
    ("names str", lambda d: d["config"].update(class_names="abcde"), "class_names must be a list"),
    ("indivisible", lambda d: d["config"].update(nheads=3), "not divisible by nheads 3"),
    (
        "bad depth",
        lambda d: d["config"]["backbone"].update(depth=19),
        r"depth.*\(18, 34, 50, 101\)",
    ),
    ("bad alpha", lambda d: d["config"]["loss"].update(focal_alpha=2), "focal_alpha must be"),
    ("typo", lambda d: d["config"].update(hiden_dim=64), "unknown field.*config.hiden_dim"),
    ("bool size", lambda d: d["config"].update(ffn_dim=True), "ffn_dim must be an int"),
    ("nan dropout", lambda d: d["config"].update(dropout=float("nan")), "dropout must be a float"),
]


@pytest.mark.parametrize(
    "change,match", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config_json_names_the_file_and_the_field(
    saved: Path, tmp_path: Path, change: Callable, match: str
) -> None:
    folder = _copy(saved, tmp_path)
    _edit(folder, change)
    with pytest.raises(zoo.WeightsError, match=match) as err:
        zoo.load(folder)
    assert str(folder / "config.json") in str(err.value)


def test_config_json_that_is_no_json(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    (folder / "config.json").write_text('{"format": "zoo", ')
    with pytest.raises(zoo.WeightsError, match="not a readable JSON file") as err:
        zoo.load(folder)
    assert str(folder / "config.json") in str(err.value)


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", b"\x00" * 100])
def test_weights_that_are_no_weights_name_the_file(
    saved: Path, tmp_path: Path, content: bytes
) -> None:
    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").write_bytes(content)
    with pytest.raises(zoo.WeightsError, match="not a readable weights file") as err:
        zoo.load(folder)
    assert str(folder / "model.safetensors") in str(err.value)
    pth = tmp_path / "x.pth"
    pth.write_bytes(content)
    with pytest.raises(zoo.WeightsError, match="not a readable weights file") as err:
        zoo.load(pth)
    assert str(pth) in str(err.value)


def test_truncated_safetensors_names_the_file(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(zoo.WeightsError, match=str(weights)):
        zoo.load(folder)


def test_pth_of_something_else_names_the_file(tmp_path: Path) -> None:
    pth = tmp_path / "other.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, pth)
    with pytest.raises(zoo.WeightsError, match=f"{pth}.*not a DETR"):
        zoo.load(pth)
    torch.save([1, 2, 3], pth)
    with pytest.raises(zoo.WeightsError, match="holds no state dict"):
        zoo.load(pth)
    torch.save({"model": {"a": 1}}, pth)
    with pytest.raises(zoo.WeightsError, match="no tensors"):
        zoo.load(pth)


def test_a_missing_path_is_not_an_unknown_model(tmp_path: Path) -> None:
    for missing in ["/nonexistent.pth", str(tmp_path / "nothing"), "./runs/x", "a/b/c"]:
        with pytest.raises(FileNotFoundError, match="no such file or folder"):
            zoo.load(missing)


def test_bad_overrides_name_the_field_not_the_file(saved: Path) -> None:
    with pytest.raises(zoo.ConfigError, match="nheads must be an int >= 1, got 0"):
        zoo.load(saved, nheads=0)
    with pytest.raises(zoo.ConfigError, match="num_classes must be an int >= 1"):
        zoo.load(saved, num_classes=0)
    with pytest.raises(zoo.ConfigError, match=r"'hiden_dim' \(did you mean 'hidden_dim'\?\)"):
        zoo.load(saved, hiden_dim=64)


def test_transformers_config_without_a_field_names_it(tmp_path: Path) -> None:
    from support.transformers_models import build_hf

    build_hf("ddetr", seed=0).save_pretrained(tmp_path)
    _edit(tmp_path, lambda d: d.pop("d_model") and None)
    with pytest.raises(zoo.WeightsError, match=f"{tmp_path / 'config.json'}.*d_model"):
        zoo.load(tmp_path)


def test_create_model_checks_types_and_ranges() -> None:
    for fields, match in [
        ({"hidden_dim": "64"}, "hidden_dim must be an int"),
        ({"num_queries": 0}, "num_queries must be an int >= 1"),
        ({"class_names": "abc", "num_classes": 3}, "class_names must be a list"),
        ({"enc_points": 0}, "enc_points must be an int >= 1"),
    ]:
        with pytest.raises(zoo.ConfigError, match=match):
            zoo.create_model("ddetr", **fields)
