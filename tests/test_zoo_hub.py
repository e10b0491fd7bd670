"""``zoo.load`` through huggingface_hub's real code, offline, on random tiny checkpoints.

Each checkpoint is a transformers model (random weights, tiny sizes) saved with
``save_pretrained`` and stored in a temporary Hub cache in huggingface_hub's on-disk
layout; ``HF_HUB_OFFLINE=1`` keeps every call off the network.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from support.hub_cache import add_snapshot, folder_files, offline_hub_cache
from support.tiny import SIZES, TINY, padded_batch
from support.transformers_models import CASES, build_hf, to_official

import zoo
from zoo.weights.convert import CLASS_HEAD
from zoo.weights.transformers_format import load_transformers_folder

pytest.importorskip("transformers")

# Registered name -> the tiny transformers case with its architecture.
NAMES = {
    "detr-r50": "detr",
    "ddetr-single-scale": "ddetr-single-scale",
    "ddetr": "ddetr",
    "ddetr-refine": "ddetr-refine",
    "ddetr-two-stage": "ddetr-two-stage",
}
OTHER_COMMIT = "1" * 40


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved transformers folder per case (seeded: two seeds for ``ddetr``)."""
    out = {}
    for i, case in enumerate(CASES):
        folder = tmp_path_factory.mktemp(case)
        build_hf(case, seed=20 + i).save_pretrained(folder)
        out[case] = folder
    other = tmp_path_factory.mktemp("ddetr-other")
    build_hf("ddetr", seed=99).save_pretrained(other)
    out["ddetr-other"] = other
    return out


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return offline_hub_cache(tmp_path, monkeypatch)


def _outputs(model: torch.nn.Module) -> dict:
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        return model.double()(pixels, mask)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: set[str] = frozenset()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


def _cache_variant(cache: Path, name: str, folder: Path, **kw) -> None:
    info = zoo.get_variant(name)
    add_snapshot(cache, info.hf_hub_id, folder_files(folder), info.hf_revision or "0" * 40, **kw)


@pytest.mark.parametrize("name", list(NAMES))
def test_load_by_name_offline_at_the_pinned_revision(
    name: str, folders: dict, offline_cache: Path
) -> None:
    info = zoo.get_variant(name)
    # The pinned commit is cached but main points elsewhere: the pin must win.
    _cache_variant(offline_cache, name, folders[NAMES[name]], branch=None)
    add_snapshot(offline_cache, info.hf_hub_id, {}, OTHER_COMMIT)
    model = zoo.load(name)
    assert not model.training
    assert model.source == f"{info.hf_hub_id}@{info.hf_revision}"
    expected = load_transformers_folder(folders[NAMES[name]])
    assert _same_weights(model, expected)
    assert torch.equal(_outputs(model)["pred_boxes"], _outputs(expected)["pred_boxes"])


def test_every_name_has_a_repo_and_a_revision_or_none() -> None:
    official = [r for r in zoo.list_models() if r.revision != "bundled"]  # test_bundled.py
    for record in official:
        assert record.repo_id is not None and record.license == "Apache-2.0"
        assert record.revision is None or len(record.revision) == 40
        assert record.num_params > 30_000_000
    ap = {r.name: r.coco_ap for r in official}
    assert ap == {
        "detr-r50": 42.0,
        "detr-r101": 43.5,
        "detr-r50-dc5": 43.3,
        "detr-r101-dc5": 44.9,
        "ddetr-single-scale": 39.4,
        "ddetr": 44.5,
        "ddetr-refine": 46.2,
        "ddetr-two-stage": 46.9,
    }


def test_explicit_revision_branch_and_cache_dir(folders: dict, offline_cache: Path) -> None:
    info = zoo.get_variant("ddetr")
    _cache_variant(offline_cache, "ddetr", folders["ddetr"], branch=None)
    add_snapshot(offline_cache, info.hf_hub_id, folder_files(folders["ddetr-other"]), OTHER_COMMIT)
    other = load_transformers_folder(folders["ddetr-other"])
    assert _same_weights(zoo.load("ddetr", revision=OTHER_COMMIT), other)
    assert _same_weights(zoo.load("ddetr", revision="main"), other)
    # cache_dir + local_files_only, the cache moved elsewhere.
    moved = offline_cache.parent / "elsewhere"
    shutil.copytree(offline_cache, moved, symlinks=True)
    model = zoo.load("ddetr", cache_dir=moved, local_files_only=True)
    assert _same_weights(model, load_transformers_folder(folders["ddetr"]))


def test_safetensors_first_bin_only_through_weights_only(
    folders: dict, offline_cache: Path, tmp_path: Path
) -> None:
    info = zoo.get_variant("ddetr")
    files = folder_files(folders["ddetr"])
    # Both present: the .bin (not even a valid file here) must not be read.
    add_snapshot(offline_cache, info.hf_hub_id, {**files, "pytorch_model.bin": b"junk"}, "2" * 40)
    expected = load_transformers_folder(folders["ddetr"])
    assert _same_weights(zoo.load("ddetr", revision="2" * 40), expected)
    # Only a .bin: read with weights_only=True (a plain state dict of tensors).
    from safetensors.torch import load_file

    state = load_file(str(folders["ddetr"] / "model.safetensors"))
    torch.save(state, tmp_path / "pytorch_model.bin")
    bin_files = {"config.json": files["config.json"]}
    bin_files["pytorch_model.bin"] = (tmp_path / "pytorch_model.bin").read_bytes()
    add_snapshot(offline_cache, info.hf_hub_id, bin_files, "3" * 40)
    assert _same_weights(zoo.load("ddetr", revision="3" * 40), expected)


def test_a_hub_repository_in_zoo_format(folders: dict, offline_cache: Path, tmp_path: Path) -> None:
    model = load_transformers_folder(folders["ddetr-refine"])
    saved = zoo.save_pretrained(model, tmp_path / "saved")
    add_snapshot(offline_cache, "someone/my-detector", folder_files(saved), "4" * 40)
    loaded = zoo.load("someone/my-detector")
    assert _same_weights(loaded, model)
    assert loaded.source == "someone/my-detector@main"


def test_official_pth_loads_by_path_to_identical_outputs(folders: dict, tmp_path: Path) -> None:
    for case in ("detr", "ddetr-single-scale", "ddetr-refine", "ddetr-two-stage"):
        hf = build_hf(case, seed=20 + list(CASES).index(case))
        state = to_official(hf.state_dict(), deformable=case != "detr")
        path = tmp_path / f"{case}.pth"
        torch.save({"model": state, "args": argparse.Namespace(lr=1e-4), "epoch": 49}, path)
        # What the tensors cannot tell: the heads (and the two-stage proposal count).
        extra = {"num_queries": 6} if case == "ddetr-two-stage" else {}
        model = zoo.load(path, nheads=TINY["nheads"], **extra)
        expected = load_transformers_folder(folders[case])
        assert _same_weights(model, expected), case
        assert torch.equal(_outputs(model)["pred_logits"], _outputs(expected)["pred_logits"])


@pytest.mark.parametrize("name", ["detr-r50", "ddetr", "ddetr-refine", "ddetr-two-stage"])
def test_num_classes_reinitialises_every_class_head(
    name: str, folders: dict, offline_cache: Path
) -> None:
    _cache_variant(offline_cache, name, folders[NAMES[name]])
    base = zoo.load(name)
    model = zoo.load(name, num_classes=3)
    report = model.load_report
    assert report.ok and not report.missing and not report.unexpected
    heads = sorted(k for k in model.state_dict() if CLASS_HEAD.match(k))
    assert report.reinitialized == heads
    config = model.config
    if name == "detr-r50":
        assert heads == ["class_embed.bias", "class_embed.weight"]
        assert model.class_embed.weight.shape == (4, config.hidden_dim)  # + "no object"
    else:
        # One per decoder layer with refinement (+ the encoder's, two-stage), else one.
        count = config.dec_layers + int(config.two_stage) if config.with_box_refine else 1
        assert len(heads) == 2 * count
        prior = -math.log((1 - 0.01) / 0.01)
        for key in heads:
            if key.endswith("bias"):
                tensor = model.state_dict()[key]
                assert tensor.shape == (3,)
                assert torch.allclose(tensor, torch.full_like(tensor, prior))
    assert _same_weights(model, base, skip=set(heads))
    assert model.config.num_classes == 3


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model 'ddetr-refin'; did you mean 'ddetr-refine'"
    ):
        zoo.load("ddetr-refin")


def test_offline_and_not_cached_says_how_to_work_offline(offline_cache: Path) -> None:
    with pytest.raises(zoo.WeightsNotFoundError) as err:
        zoo.load("ddetr-two-stage")
    message = str(err.value)
    assert "SenseTime/deformable-detr-with-box-refine-two-stage" in message
    assert "HF_HUB_OFFLINE=1" in message and "HF_HUB_CACHE" in message
    assert "local folder or .pth" in message
    # The weights missing while the config is cached: the same clear error.
    info = zoo.get_variant("ddetr")
    add_snapshot(offline_cache, info.hf_hub_id, {"config.json": b"{}"}, info.hf_revision)
    with pytest.raises(zoo.WeightsNotFoundError, match="not in the Hugging Face cache"):
        zoo.load("ddetr")


def test_shapes_that_do_not_fit_name_the_tensor_and_both_shapes(
    folders: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(folders["ddetr"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["encoder_ffn_dim"] = config["decoder_ffn_dim"] = 2 * TINY["ffn_dim"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        zoo.load(folder)
    ffn, hidden = TINY["ffn_dim"], TINY["hidden_dim"]
    want = f"encoder.layers.0.ffn.linear1.weight (checkpoint {(ffn, hidden)} vs model {(2 * ffn, hidden)})"
    assert want in str(err.value)


def test_a_checkpoint_of_another_variant_is_refused(folders: dict, offline_cache: Path) -> None:
    _cache_variant(offline_cache, "ddetr-two-stage", folders["ddetr-refine"])
    with pytest.raises(ValueError, match="two_stage is False, expected True"):
        zoo.load("ddetr-two-stage")
