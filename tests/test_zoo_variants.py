"""Every registered variant at a tiny size: forward, backward, output layout, registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from support.tiny import NUM_CLASSES, NUM_QUERIES, TINY, random_targets, randomize_

import zoo
import zoo.models.parts.backbone
from zoo.loss.criterion import SetCriterion, build_criterion

VARIANTS = zoo.list_variants()


def tiny(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    sizes = {**TINY, "num_classes": NUM_CLASSES, "num_queries": NUM_QUERIES}
    return zoo.create_model(name, **{**sizes, **extra})


def test_registry_lists_the_official_variants() -> None:
    assert set(VARIANTS) == {
        "detr-r50",
        "detr-r101",
        "detr-r50-dc5",
        "detr-r101-dc5",
        "ddetr-single-scale",
        "ddetr",
        "ddetr-refine",
        "ddetr-two-stage",
    }
    info = zoo.get_variant("ddetr-two-stage")
    assert info.hf_hub_id == "SenseTime/deformable-detr-with-box-refine-two-stage"
    assert info.config.two_stage and info.config.with_box_refine
    assert zoo.list_variants("detr") == ["detr-r101", "detr-r101-dc5", "detr-r50", "detr-r50-dc5"]
    dc5 = zoo.get_variant("detr-r101-dc5")
    assert dc5.hf_hub_id == "facebook/detr-resnet-101-dc5"
    assert dc5.config.backbone.dilation and dc5.config.backbone.depth == 101
    # A saved configuration names its variant: depth and dilation tell the DETRs apart.
    from zoo.models.registry.catalog import variant_of

    for name in ("detr-r50", "detr-r50-dc5", "detr-r101", "detr-r101-dc5"):
        assert variant_of(zoo.get_variant(name).config) == name


def test_official_defaults() -> None:
    d = zoo.get_variant("ddetr").config
    assert (d.num_queries, d.num_levels, d.enc_points, d.dec_points) == (300, 4, 4, 4)
    assert (d.hidden_dim, d.ffn_dim, d.nheads, d.enc_layers, d.dec_layers) == (256, 1024, 8, 6, 6)
    assert (d.loss.cost_class, d.loss.loss_class, d.loss.focal, d.loss.focal_alpha) == (
        2,
        2,
        True,
        0.25,
    )
    r = zoo.get_variant("detr-r101").config
    assert (r.num_queries, r.ffn_dim, r.backbone.depth, r.loss.eos_coef) == (100, 2048, 101, 0.1)
    assert zoo.get_variant("ddetr-single-scale").config.num_levels == 1


def test_overrides_and_bad_configs() -> None:
    cfg = zoo.variant_config("ddetr", depth=34, enc_points=2, dec_points=3, num_levels=3)
    assert (cfg.backbone.depth, cfg.enc_points, cfg.dec_points, cfg.num_levels) == (34, 2, 3, 3)
    with pytest.raises(ValueError, match="depth"):
        zoo.create_model("ddetr", depth=42)
    with pytest.raises(ValueError, match="two_stage"):
        zoo.create_model("ddetr-two-stage", with_box_refine=False)
    with pytest.raises(KeyError, match="unknown variant"):
        zoo.create_model("yolo")
    # A mistyped field names itself, the closest real one and every field there is.
    with pytest.raises(zoo.ConfigError, match=r"'depthh' \(did you mean 'depth'\?\).*hidden_dim"):
        zoo.create_model("ddetr", depthh=18)


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward(name: str) -> None:
    model = tiny(name)
    # The official init zeroes some layers (sampling offsets, last box layer), which
    # blocks gradients on the first step; random weights let every path be checked.
    randomize_(model)
    model.train()
    images = torch.randn(2, 3, 64, 96)
    mask = torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, 48:, :] = False
    mask[1, :, 72:] = False
    out = model(images, mask)
    deformable = name.startswith("ddetr")
    columns = NUM_CLASSES if deformable else NUM_CLASSES + 1
    assert out["pred_logits"].shape == (2, NUM_QUERIES, columns)
    assert out["pred_boxes"].shape == (2, NUM_QUERIES, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == TINY["dec_layers"] - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == out["pred_logits"].shape
    assert ("enc_outputs" in out) == (name == "ddetr-two-stage")
    if "enc_outputs" in out:
        assert out["enc_outputs"]["pred_logits"].shape[-1] == NUM_CLASSES
    criterion = build_criterion(model.config)
    assert isinstance(criterion, SetCriterion)
    targets = [
        {k: v.float() if k == "boxes" else v for k, v in t.items()} for t in random_targets(2)
    ]
    losses = criterion(out, targets)
    losses["loss"].backward()
    frozen = ("backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1")
    for pname, param in model.named_parameters():
        if pname.startswith(frozen):
            assert not param.requires_grad, pname
            continue
        assert param.requires_grad, pname
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["ddetr", "ddetr-two-stage"])
def test_sampling_outputs(name: str) -> None:
    model = tiny(name, num_levels=3, dec_points=2).eval()
    with torch.no_grad():
        plain = model(torch.randn(1, 3, 64, 64))
        out = model(torch.randn(1, 3, 64, 64), output_sampling=True)
    assert "sampling_locations" not in plain
    layers, heads = TINY["dec_layers"], TINY["nheads"]
    assert out["sampling_locations"].shape == (layers, 1, NUM_QUERIES, heads, 3, 2, 2)
    weights = out["attention_weights"]
    assert weights.shape == (layers, 1, NUM_QUERIES, heads, 3, 2)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(layers, 1, NUM_QUERIES, heads))


def test_every_size_is_configuration() -> None:
    model = tiny(
        "ddetr", num_levels=5, enc_points=3, dec_points=1, nheads=2, ffn_dim=16, hidden_dim=64
    )
    assert len(model.levels.input_proj) == 5
    layer = model.decoder.layers[0]
    assert (layer.cross_attn.n_points, layer.cross_attn.n_heads) == (1, 2)
    assert model.encoder.layers[0].self_attn.n_points == 3
    assert model.encoder.layers[0].ffn.linear1.out_features == 16
    out = model(torch.randn(1, 3, 64, 64))
    assert out["pred_logits"].shape == (1, NUM_QUERIES, NUM_CLASSES)


def test_configs_are_frozen_dataclasses() -> None:
    cfg = zoo.get_variant("detr-r50").config
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_dim = 3  # type: ignore[misc]


class _PoolingBackbone(torch.nn.Module):
    """Average pooling over 32x32 cells: exactly blind to padding beyond the real area
    when that area is a multiple of 32 (a ResNet's convolutions are not: they carry
    values across the border, in the official models as here)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, images: torch.Tensor, padding_mask: torch.Tensor) -> list:
        from zoo.models.parts.backbone import downsample_mask

        pooled = torch.nn.functional.avg_pool2d(images, 32)
        feats = pooled.repeat(1, -(-self.channels // 3), 1, 1)[:, : self.channels]
        return [(feats, downsample_mask(padding_mask, feats.shape[-2:]))]


def test_detr_transformer_ignores_padding() -> None:
    """Masks, position encodings and attention see only the real area of each image."""
    model = tiny("detr-r50").double().eval()
    randomize_(model)
    model.backbone = _PoolingBackbone(model.input_proj.in_channels)  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 64, 96, generator=gen, dtype=torch.float64)
    batch = torch.randn(2, 3, 128, 160, generator=gen, dtype=torch.float64)
    batch[0] = 0
    batch[0, :, :64, :96] = image[0]
    mask = torch.ones(2, 128, 160, dtype=torch.bool)
    mask[0, 64:] = False
    mask[0, :, 96:] = False
    with torch.no_grad():
        alone = model(image)
        padded = model(batch, mask)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(padded[key][:1], alone[key], atol=1e-10, rtol=0)
    # The test can fail: without the mask the padding does change the result.
    with torch.no_grad():
        unmasked = model(batch)
    assert not torch.allclose(unmasked["pred_logits"][:1], alone["pred_logits"], atol=1e-3)


def test_backbone_options() -> None:
    frozen = tiny("detr-r50", train_backbone=False)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.transformer.parameters())
    dc5 = tiny("detr-r50", depth=50, dilation=True).eval()
    assert dc5.backbone.strides == [16]
    features = dc5.backbone(torch.randn(1, 3, 64, 96), torch.zeros(1, 64, 96, dtype=torch.bool))
    assert features[0][0].shape[-2:] == (4, 6)
    ms = tiny("ddetr", depth=34)
    assert ms.backbone.num_channels == [128, 256, 512] and ms.backbone.strides == [8, 16, 32]
    # DC5 on basic blocks too: C5 at stride 16 for ResNet-18/34, scaled or not.
    for extra in ({"depth": 34}, {"depth": 18, "width": 16, "norm": "group"}):
        model = tiny("detr-r50", dilation=True, **extra).eval()
        assert model.backbone.strides == [16]
        feats = model.backbone(torch.randn(1, 3, 64, 96), torch.zeros(1, 64, 96, dtype=torch.bool))
        assert feats[0][0].shape[-2:] == (4, 6)


@pytest.mark.parametrize("depth", [18, 34])
def test_dilated_basic_blocks_equal_timm_output_stride_16(depth: int) -> None:
    """The DC5 trunk of a basic-block ResNet against timm's ``output_stride=16`` (what
    transformers builds for ``dilation=True``) on the same random weights."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(depth)
    reference = timm.create_model(f"resnet{depth}", pretrained=False, output_stride=16).eval()
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours = zoo.models.parts.backbone.ResNetBody(depth, dilation=True).eval()
    state = {k: v for k, v in reference.state_dict().items() if k in ours.state_dict()}
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    reference, ours = reference.double(), ours.double()
    x = torch.randn(1, 3, 96, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = reference.forward_features(x)
        got = ours(x)[-1]
    assert got.shape[-2:] == (6, 4)  # stride 16
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)
    # The test can fail: the undilated trunk on the same weights differs.
    plain = zoo.models.parts.backbone.ResNetBody(depth).eval()
    plain.load_state_dict(state)
    plain = plain.double()
    with torch.no_grad():
        assert plain(x)[-1].shape[-2:] == (3, 2)


def test_scaled_group_norm_backbone_is_a_torchvision_resnet() -> None:
    """width/norm="group": torchvision's trunk with scaled channels, all of it trainable."""
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    full = zoo.models.parts.backbone.ResNetBody(18, width=64, norm="group")
    convs = {
        k: v.shape for k, v in reference.state_dict().items() if "conv" in k or "downsample.0" in k
    }
    ours = {k: v.shape for k, v in full.state_dict().items() if "conv" in k or "downsample.0" in k}
    assert ours == convs  # same names and shapes as torchvision's ResNet-18 convolutions
    model = tiny("ddetr", depth=18, width=16, norm="group", num_levels=4)
    backbone = model.backbone
    assert backbone.num_channels == [32, 64, 128] and backbone.strides == [8, 16, 32]
    assert all(p.requires_grad for p in backbone.parameters())  # the stem and layer1 too
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    feats = backbone(torch.randn(2, 3, 64, 96), torch.zeros(2, 64, 96, dtype=torch.bool))
    assert [f.shape[1:] for f, _ in feats] == [(32, 8, 12), (64, 4, 6), (128, 2, 3)]
    # Zero-initialised last norms: a block without downsampling starts as the identity.
    block = backbone.body.layer1[0]
    x = torch.rand(1, 16, 8, 8)
    assert torch.equal(block(x), torch.relu(x))
    out = model(torch.randn(2, 3, 64, 64))
    out["pred_logits"].sum().backward()
    assert backbone.body.conv1.weight.grad is not None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 20}, "multiple of 8"),
        ({"width": 32, "depth": 50}, "depth 18 or 34"),
        ({"norm": "batch"}, "backbone norm"),
        ({"class_names": ("a", "b")}, "class_names has 2 names"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_bad_backbone_and_label_fields(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        zoo.create_model("ddetr", **{**TINY, "num_classes": 3, **fields})


@pytest.mark.parametrize("name", ["ddetr", "ddetr-single-scale", "ddetr-refine", "ddetr-two-stage"])
def test_head_pairs_counts_the_models_heads(name: str) -> None:
    """The converters place checkpoint heads by ``config.head_pairs``: it must be what the
    model holds (one shared pair, or one per layer plus the encoder's)."""
    model = zoo.create_model(name, num_classes=3, **TINY)
    expected = {"ddetr": 1, "ddetr-single-scale": 1, "ddetr-refine": 2, "ddetr-two-stage": 3}
    held = len(model.heads.class_embed) if hasattr(model.heads.class_embed, "__len__") else 1
    assert model.config.head_pairs == held == expected[name]
