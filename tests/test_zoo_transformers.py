"""The zoo against transformers on the same random weights: outputs equal in float64.

Each case builds a small transformers model (random timm ResNet-18 backbone), randomises
every weight (including those transformers initialises to zero or constants), saves it
with ``save_pretrained`` and loads the folder with ``zoo.weights.transformers_format``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from support.tiny import SIZES, padded_batch, random_targets, randomize_
from support.transformers_models import CASES, TOL, build_hf

import zoo
from zoo.loss.criterion import criterion_from_loss_config
from zoo.models.config import DeformableDetrConfig, DetrConfig, LossConfig
from zoo.weights.transformers_format import load_transformers_folder

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    out = {}
    for i, name in enumerate(CASES):
        hf = build_hf(name, seed=i)
        folder = tmp_path_factory.mktemp(name)
        hf.save_pretrained(folder)
        out[name] = (hf.double(), folder)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_equal_transformers(name: str, saved: dict) -> None:
    hf, folder = saved[name]
    ours = load_transformers_folder(folder, dtype=torch.float64)
    assert ours.load_report.ok
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        expected = hf(
            pixel_values=pixels, pixel_mask=mask, output_hidden_states=True, output_attentions=True
        )
        detr = name.startswith("detr")
        got = ours(pixels, mask) if detr else ours(pixels, mask, output_sampling=True)
    torch.testing.assert_close(got["pred_logits"], expected.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(got["pred_boxes"], expected.pred_boxes, atol=TOL, rtol=0)
    if not detr:
        # The decoder cross-attention weights, (N, Q, M, L, P) per layer.
        hf_weights = torch.stack(expected.cross_attentions)
        torch.testing.assert_close(got["attention_weights"], hf_weights, atol=TOL, rtol=0)
    # Intermediate layers too (transformers returns them only with labels: recompute).
    assert len(got["aux_outputs"]) == hf.config.decoder_layers - 1
    if name.startswith("ddetr"):
        states = expected.intermediate_hidden_states.unbind(1)
        heads = [hf.class_embed[i] for i in range(len(states))]
    else:
        # (embeddings, layer 1, ..., layer L normed): the heads see each layer normed.
        states = [hf.model.decoder.layernorm(h) for h in expected.decoder_hidden_states[1:]]
        heads = [hf.class_labels_classifier] * len(states)
    for aux, state, head in zip(got["aux_outputs"], states, heads, strict=False):
        torch.testing.assert_close(aux["pred_logits"], head(state), atol=TOL, rtol=0)
    if name == "ddetr-two-stage":
        torch.testing.assert_close(
            got["enc_outputs"]["pred_logits"], expected.enc_outputs_class, atol=TOL, rtol=0
        )


def test_config_maps(saved: dict) -> None:
    _, folder = saved["ddetr-two-stage"]
    model = load_transformers_folder(folder)
    assert isinstance(model.config, DeformableDetrConfig)
    assert model.config.two_stage and model.config.with_box_refine
    assert model.config.backbone.depth == 18
    assert model.config.num_queries == 6
    _, folder = saved["detr"]
    assert isinstance(load_transformers_folder(folder).config, DetrConfig)


def test_strict_loading_reports_keys(saved: dict) -> None:
    _, folder = saved["ddetr"]
    with pytest.raises(ValueError, match="mismatched"):
        load_transformers_folder(folder, num_classes=7)
    with pytest.warns(UserWarning, match="mismatched"):
        model = load_transformers_folder(folder, strict=False, num_classes=7)
    assert any("class_embed" in k for k in model.load_report.mismatched)


def test_refine_checkpoint_with_every_head_stored(tmp_path: Path) -> None:
    """The Hub's refine checkpoints (converted by transformers 4.x) store a distinct class
    head per decoder layer plus copies of the box heads under ``model.decoder``; transformers
    5 ties the class heads, so untie them here and write the full state dict."""
    from safetensors.torch import save_file

    hf = build_hf("ddetr-refine", seed=7)
    hf.class_embed = torch.nn.ModuleList(copy.deepcopy(m) for m in hf.class_embed)
    for i, head in enumerate(hf.class_embed):
        randomize_(head, seed=100 + i)
    assert not torch.equal(hf.class_embed[0].weight, hf.class_embed[1].weight)
    state = {k: v.detach().clone().contiguous() for k, v in hf.state_dict().items()}
    assert "class_embed.1.weight" in state and "model.decoder.bbox_embed.1.layers.0.weight" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    hf.config.to_json_file(str(tmp_path / "config.json"))
    ours = load_transformers_folder(tmp_path, dtype=torch.float64)
    hf = hf.double()
    pixels, mask = padded_batch(SIZES, seed=3)
    with torch.no_grad():
        expected = hf(pixel_values=pixels, pixel_mask=mask)
        got = ours(pixels, mask)
    torch.testing.assert_close(got["pred_logits"], expected.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(got["pred_boxes"], expected.pred_boxes, atol=TOL, rtol=0)
    # A copy that disagrees with the head it duplicates is reported, not silently dropped.
    state["model.decoder.bbox_embed.1.layers.0.weight"] += 1
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected: model\.decoder\.bbox_embed\.1"):
        load_transformers_folder(tmp_path)


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The Hub cache layout ``snapshot_download`` resolves offline: refs/main -> snapshot."""
    commit = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())


def test_load_by_name_from_the_hub_cache(saved: dict, tmp_path: Path) -> None:
    hf, folder = saved["ddetr-two-stage"]
    _fake_hub_cache(tmp_path, "SenseTime/deformable-detr-with-box-refine-two-stage", folder)
    # revision="main": the fake cache's branch, not the name's pinned commit.
    model = zoo.load(
        "ddetr-two-stage", revision="main", cache_dir=tmp_path, local_files_only=True
    ).double()
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        expected = hf(pixel_values=pixels, pixel_mask=mask)
        got = model(pixels, mask)
    torch.testing.assert_close(got["pred_boxes"], expected.pred_boxes, atol=TOL, rtol=0)
    # A checkpoint of another variant under the name is refused.
    _fake_hub_cache(tmp_path, "SenseTime/deformable-detr-with-box-refine", saved["ddetr"][1])
    with pytest.raises(ValueError, match="with_box_refine"):
        zoo.load("ddetr-refine", revision="main", cache_dir=tmp_path, local_files_only=True)


def test_config_of_a_transformers_4_checkpoint() -> None:
    """Hub configs written by transformers 4.x name the timm backbone at the top level."""
    from zoo.weights.transformers_format import config_from_transformers

    hub = {
        "model_type": "deformable_detr",
        "backbone": "resnet50",
        "use_timm_backbone": True,
        "backbone_config": None,
        "d_model": 256,
        "encoder_attention_heads": 8,
        "decoder_attention_heads": 8,
        "encoder_layers": 6,
        "decoder_layers": 6,
        "encoder_ffn_dim": 1024,
        "decoder_ffn_dim": 1024,
        "num_queries": 300,
        "num_feature_levels": 4,
        "encoder_n_points": 4,
        "decoder_n_points": 4,
        "two_stage": False,
        "with_box_refine": True,
        "id2label": {str(i): f"c{i}" for i in range(91)},
    }
    assert config_from_transformers(hub) == zoo.get_variant("ddetr-refine").config
    with pytest.raises(ValueError, match="resnet18/34/50/101"):
        config_from_transformers({**hub, "backbone": "resnet50d"})


@pytest.mark.parametrize("name", ["ddetr", "ddetr-refine", "ddetr-two-stage"])
def test_model_losses_equal_transformers(name: str, saved: dict) -> None:
    """Losses of the whole model on the same targets, every decoder layer included.

    transformers computes no two-stage encoder loss (the official code does): the
    ``_enc`` terms are checked in test_zoo_criterion instead.
    """
    hf, folder = saved[name]
    ours = load_transformers_folder(folder, dtype=torch.float64)
    pixels, mask = padded_batch(SIZES)
    targets = random_targets(len(SIZES), seed=5)
    hf.config.auxiliary_loss = True
    try:
        with torch.no_grad():
            expected = hf(
                pixel_values=pixels,
                pixel_mask=mask,
                labels=[{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets],
            ).loss_dict
    finally:
        hf.config.auxiliary_loss = False
    # transformers' matcher weighs the class cost by config.class_cost (1 here).
    loss_cfg = LossConfig(cost_class=hf.config.class_cost, focal=True)
    with torch.no_grad():
        got = criterion_from_loss_config(ours.config.num_classes, loss_cfg)(
            ours(pixels, mask), targets
        )
    compared = [k for k in expected if not k.startswith("cardinality")]
    assert "loss_bbox_0" in compared
    for key in compared:
        torch.testing.assert_close(got[key], expected[key], atol=TOL, rtol=0, msg=key)
    assert ("loss_ce_enc" in got) == (name == "ddetr-two-stage")


def test_dc5_checkpoints_give_a_stride_16_map(saved: dict) -> None:
    """transformers' ``dilation=True`` (DETR-DC5) maps to a dilated C5: 16 pixels a cell."""
    for name in ("detr-dc5", "ddetr-single-scale-dc5"):
        _, folder = saved[name]
        model = load_transformers_folder(folder)
        assert model.config.backbone.dilation
        assert model.backbone.strides == [16]
    _, folder = saved["detr"]
    assert load_transformers_folder(folder).backbone.strides == [32]


def test_dc5_by_name_from_the_hub_cache(saved: dict, tmp_path: Path) -> None:
    hf, folder = saved["detr-dc5"]
    _fake_hub_cache(tmp_path, "facebook/detr-resnet-50-dc5", folder)
    model = zoo.load("detr-r50-dc5", revision="main", cache_dir=tmp_path, local_files_only=True)
    pixels, mask = padded_batch(SIZES)
    with torch.no_grad():
        expected = hf(pixel_values=pixels, pixel_mask=mask)
        got = model.double()(pixels, mask)
    torch.testing.assert_close(got["pred_boxes"], expected.pred_boxes, atol=TOL, rtol=0)
    # The same weights without the dilation give other outputs: the map's stride matters.
    config = json.loads((folder / "config.json").read_text())
    assert config["dilation"] is True
    plain = tmp_path / "undilated"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({**config, "dilation": False}))
    (plain / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    undilated = load_transformers_folder(plain, dtype=torch.float64)
    with torch.no_grad():
        other = undilated(pixels, mask)
    assert not torch.allclose(other["pred_boxes"], expected.pred_boxes, atol=1e-3)
