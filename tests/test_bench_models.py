"""Smoke test of benchmarks/bench_models.py's helpers on a tiny model (a few seconds on CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_models as bm

# A tiny two-stage model: random ResNet-18, hidden 32, 1+2 layers, 6 proposals.
TINY = {
    "backbone": "resnet18",
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 48,
    "decoder_ffn_dim": 48,
    "num_queries": 6,
    "two_stage_num_proposals": 6,
}
CPU = torch.device("cpu")


def test_sizes_and_arguments() -> None:
    assert bm.num_encoder_pixels(800, 1216) == 100 * 152 + 50 * 76 + 25 * 38 + 13 * 19
    args = bm.parse_args(["--device", "cpu", "--quick", "--train"])
    assert args.size == bm.QUICK_SIZE and args.batch_sizes == [1] and args.output is None
    assert bm.num_encoder_pixels(*bm.QUICK_SIZE) >= 300
    args = bm.parse_args(["--device", "cpu", "--batch-sizes", "1", "--dtypes", "float32"])
    assert args.size == (800, 1216) and args.output == "models_cpu" and args.train_batch == 4
    with pytest.raises(SystemExit):
        bm.parse_args(["--device", "cpu", "--size", "64", "64"])


def test_inputs() -> None:
    pixels, mask = bm.random_images([(32, 48), (24, 40)], CPU)
    assert pixels.shape == (2, 3, 32, 48) and mask.shape == (2, 32, 48)
    assert mask[1, 24:].sum() == 0 and bool((pixels[1, :, 24:] == 0).all())
    targets = bm.random_targets(6, CPU, seed=1)
    assert all(4 <= len(t["labels"]) <= 10 for t in targets)
    assert all(bool(((t["boxes"] > 0) & (t["boxes"] < 1)).all()) for t in targets)
    assert bm.hf_labels(targets)[0]["class_labels"] is targets[0]["labels"]


def test_tiny_pair_agrees_and_times(tmp_path: Path) -> None:
    ours, hf = bm.build_pair(tmp_path, seed=3, **TINY)
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == sum(
        p.numel() for p in hf.parameters() if p.requires_grad
    )
    agreement = bm.check_agreement(ours, hf, CPU, (64, 96))
    assert agreement["float64"]["equal"]
    assert agreement["float32"]["boxes_max_abs_diff"] < 1e-3
    bases = {"zoo": ours, "transformers": hf}
    pixels, mask = bm.random_images([(64, 96)], CPU)
    entry = bm._entry(1, "float32", False)
    entry.update(bm._measure(bm.inference_fns(bases, pixels, mask, CPU, "float32"), CPU, 2, 1))
    bm._summary(entry, 1)
    assert entry["speedup"] > 0 and len(entry["zoo"]["samples_s"]) == 2
    # One training step each: losses are finite and the weights move.
    for m in bases.values():
        m.train()
    targets = bm.random_targets(2, CPU)
    pixels, mask = bm.random_images([(64, 96)] * 2, CPU)
    fns, opts = bm.train_fns(bases, bases, pixels, mask, targets, CPU, "float32")
    trainable = {
        name: next(p for p in m.parameters() if p.requires_grad) for name, m in bases.items()
    }
    before = {name: p.detach().clone() for name, p in trainable.items()}
    for fn in fns.values():
        assert torch.isfinite(fn())
    for name, p in trainable.items():
        assert not torch.equal(before[name], p)
    assert bm.state_mib(ours, opts["zoo"]) > bm.state_mib(ours)
