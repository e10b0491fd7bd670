"""The bundled demo model: package data loadable by name, offline, listed by ``zoo list``."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.cli import main as run

FOLDER = Path(zoo.__file__).parent / "pretrained" / "shapes-ddetr"


def test_shapes_demo_loads_offline_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = zoo.load("shapes-demo")
    assert model.config.class_names == ("circle", "square", "triangle", "cross", "star")
    assert not model.training
    record = next(r for r in zoo.list_models() if r.name == "shapes-demo")
    assert record.revision == "bundled" and record.repo_id is None
    # The count read from the safetensors header equals the loaded model's parameters.
    assert record.num_params == sum(p.numel() for p in model.parameters())
    assert "shapes-demo" not in zoo.list_variants()  # not a trainable architecture


def test_zoo_list_shows_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("shapes-demo"))
    assert "bundled" in line and "2.0M" in line


def test_a_close_name_is_suggested() -> None:
    with pytest.raises(ValueError, match="did you mean 'shapes-demo'"):
        zoo.load("shapes-dem")


def test_package_data_is_in_the_package() -> None:
    assert (FOLDER / "config.json").is_file() and (FOLDER / "model.safetensors").is_file()
