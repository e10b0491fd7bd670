"""The zoo's own format: save -> load is bit-identical for every family; push_to_hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from support.tiny import NUM_CLASSES, NUM_QUERIES, SIZES, TINY, padded_batch, randomize_

import zoo
from zoo.weights.zoo_format import config_from_dict, config_to_dict

VARIANTS = ["detr-r50", "ddetr-single-scale", "ddetr", "ddetr-refine", "ddetr-two-stage"]


def tiny(name: str, seed: int = 0, **extra: Any) -> torch.nn.Module:
    sizes = {**TINY, "num_classes": NUM_CLASSES, "num_queries": NUM_QUERIES}
    model = zoo.create_model(name, **{**sizes, **extra})
    randomize_(model, seed)
    return model.eval()


def _assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        out_a, out_b = a(pixels.float(), mask), b(pixels.float(), mask)
    for key in ("pred_logits", "pred_boxes"):
        assert torch.equal(out_a[key], out_b[key]), key


@pytest.mark.parametrize("name", VARIANTS)
def test_save_load_round_trip_is_bit_identical(name: str, tmp_path: Path) -> None:
    model = tiny(name, seed=VARIANTS.index(name))
    folder = zoo.save_pretrained(model, tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    data = json.loads((folder / "config.json").read_text())
    assert data["format"] == "zoo" and data["format_version"] == 1
    assert data["family"] == ("detr" if name.startswith("detr") else "deformable")
    # ResNet-18 DETR is no registered variant; the deformable ones are named by their heads.
    assert data["variant"] == (None if name == "detr-r50" else name)
    loaded = zoo.load(folder)
    assert loaded.config == model.config
    assert loaded.load_report.ok
    _assert_identical(model, loaded)


def test_config_round_trips_through_json() -> None:
    config = zoo.variant_config("ddetr-two-stage", hidden_dim=64, depth=34)
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(data) == config
    with pytest.raises(ValueError, match="upgrade"):
        config_from_dict({**data, "format_version": 99})


def test_aliased_heads_are_stored_once_and_restored(tmp_path: Path) -> None:
    model = tiny("ddetr-refine", seed=3)
    # Tie every decoder layer's box head to the first one, as transformers can.
    for i in range(1, len(model.heads.bbox_embed)):
        model.heads.bbox_embed[i] = model.heads.bbox_embed[0]
    state = model.state_dict()
    assert state["heads.bbox_embed.1.layers.0.weight"].data_ptr() == (
        state["heads.bbox_embed.0.layers.0.weight"].data_ptr()
    )
    folder = zoo.save_pretrained(model, tmp_path / "tied")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())
        aliases = json.loads(f.metadata()["aliases"])
    assert "heads.bbox_embed.1.layers.0.weight" not in stored
    assert aliases["heads.bbox_embed.1.layers.0.weight"] == "heads.bbox_embed.0.layers.0.weight"
    _assert_identical(model, zoo.load(folder))


def test_model_card(tmp_path: Path) -> None:
    model = tiny("ddetr-two-stage")
    model.source = "SenseTime/deformable-detr-with-box-refine-two-stage@abc"
    card = (zoo.save_pretrained(model, tmp_path / "m") / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n")
    assert "pipeline_tag: object-detection" in card
    assert "# ddetr-two-stage" in card and "Weights from `SenseTime/" in card
    assert "| two_stage | True |" in card


def test_num_classes_on_a_saved_model(tmp_path: Path) -> None:
    model = tiny("ddetr")
    folder = zoo.save_pretrained(model, tmp_path / "m")
    new = zoo.load(folder, num_classes=2)
    assert new.load_report.reinitialized == [
        "heads.class_embed.bias",
        "heads.class_embed.weight",
    ]
    assert new.heads.class_embed.weight.shape[0] == 2


def test_push_to_hub_uploads_the_saved_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}

    class FakeApi:
        def __init__(self, token: Any = None) -> None:
            calls["token"] = token

        def create_repo(self, repo_id: str, **kw: Any) -> None:
            calls["create_repo"] = (repo_id, kw)

        def upload_folder(self, *, repo_id: str, folder_path: str, **kw: Any) -> str:
            calls["upload"] = (repo_id, kw)
            calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return "commit-info"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = tiny("ddetr-single-scale")
    out = zoo.push_to_hub(model, "me/tiny", token="hf_x", private=True)
    assert out == "commit-info"
    assert calls["token"] == "hf_x"
    assert calls["create_repo"] == ("me/tiny", {"private": True, "exist_ok": True})
    assert calls["upload"][0] == "me/tiny"
    assert set(calls["files"]) == {"README.md", "config.json", "model.safetensors"}
    # What was uploaded loads back to the same model.
    folder = tmp_path / "uploaded"
    folder.mkdir()
    for name, data in calls["files"].items():
        (folder / name).write_bytes(data)
    _assert_identical(model, zoo.load(folder))


def test_class_names_and_image_size_round_trip(tmp_path: Path) -> None:
    names = tuple(f"thing {k}" for k in range(NUM_CLASSES))
    model = tiny("ddetr", class_names=names, image_size=128, width=16, norm="group")
    folder = zoo.save_pretrained(model, tmp_path / "m")
    loaded = zoo.load(folder)
    assert loaded.config == model.config
    assert loaded.config.class_names == names and loaded.config.image_size == 128
    assert loaded.config.backbone.width == 16 and loaded.config.backbone.norm == "group"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # Fine-tuning to another class count: the stored names no longer apply.
    assert zoo.load(folder, num_classes=2).config.class_names == ()


def test_input_statistics_travel_with_the_saved_config(tmp_path: Path) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = tiny("ddetr", image_mean=mean, image_std=std)
    folder = zoo.save_pretrained(model, tmp_path / "m")
    data = json.loads((folder / "config.json").read_text())
    assert data["config"]["image_mean"] == list(mean) and data["config"]["image_std"] == list(std)
    loaded = zoo.load(folder)
    assert loaded.config.image_mean == mean and loaded.config.image_std == std
    # A config.json written before the statistics were recorded: ImageNet's, as then.
    for key in ("image_mean", "image_std"):
        del data["config"][key]
    (folder / "config.json").write_text(json.dumps(data))
    old = zoo.load(folder)
    assert old.config.image_mean == (0.485, 0.456, 0.406)
    assert old.config.image_std == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="image_std must hold 3 values"):
        tiny("ddetr", image_std=(0.2, 0.2))
    with pytest.raises(ValueError, match="image_std must be positive"):
        tiny("ddetr", image_std=(0.2, 0.0, 0.2))


def test_predict_normalises_with_the_configured_statistics() -> None:
    model = tiny("ddetr", image_mean=(0.5, 0.4, 0.3), image_std=(0.25, 0.5, 0.1), image_size=128)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.predict([torch.full((3, 128, 128), 0.7)], threshold=0.0)
    # (0.7 - mean) / std per channel, by hand.
    expected = torch.tensor([0.8, 0.6, 4.0]).view(1, 3, 1, 1).expand(1, 3, 128, 128)
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=0)
