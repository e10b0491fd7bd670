"""benchmarks/bench_models.py on a tiny pair: it refuses models that disagree, its ratios are\nthe medians' ratios, its training steps train, and its phases cover the step."""

from __future__ import annotations

import statistics
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


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module]:
    return bm.build_pair(tmp_path_factory.mktemp("pair"), seed=3, **TINY)


def test_tiny_pair_agrees(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    ours, hf = pair
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == sum(
        p.numel() for p in hf.parameters() if p.requires_grad
    )
    agreement = bm.check_agreement(ours, hf, CPU, (64, 96))
    assert agreement["float64"]["equal"]
    assert agreement["float32"]["boxes_max_abs_diff"] < 1e-3


def test_disagreeing_models_are_never_timed(
    pair: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    ours, hf = pair
    biases = [head.bias for head in hf.class_embed]
    saved = [b.detach().clone() for b in biases]
    with torch.no_grad():
        for b in biases:
            b[0] += 0.5  # class 0 of every class head: the logits move, the boxes do not
    try:
        with pytest.raises(RuntimeError, match="disagree in float64"):
            bm.check_agreement(ours, hf, CPU, (64, 96))
    finally:
        with torch.no_grad():
            for b, s in zip(biases, saved, strict=True):
                b.copy_(s)


def test_ratios_are_the_medians_ratios(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    ours, hf = pair
    bases = {"zoo": ours, "transformers": hf}
    pixels, mask = bm.random_images([(64, 96)], CPU)
    entry = bm._entry(1, "float32", False)
    entry.update(bm._measure(bm.inference_fns(bases, pixels, mask, CPU, "float32"), CPU, 3, 1))
    bm._summary(entry, 1)
    z, t = entry["zoo"], entry["transformers"]
    for r in (z, t):
        assert len(r["samples_s"]) == len(r["cpu_samples_s"]) == 3
        assert r["median_s"] == statistics.median(r["samples_s"])
        assert r["cpu_median_s"] == statistics.median(r["cpu_samples_s"])
        assert r["images_per_s"] == pytest.approx(1 / r["median_s"])
    # > 1 when the zoo is faster: transformers' median over the zoo's.
    assert entry["speedup"] == pytest.approx(
        statistics.median(t["samples_s"]) / statistics.median(z["samples_s"])
    )
    assert entry["cpu_time_speedup"] == pytest.approx(t["cpu_median_s"] / z["cpu_median_s"])


def test_training_steps_and_their_phases(pair: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    ours, hf = pair
    bases = {"zoo": ours, "transformers": hf}
    for m in bases.values():
        m.train()
    try:
        targets = bm.random_targets(2, CPU)
        pixels, mask = bm.random_images([(64, 96)] * 2, CPU)
        fns, opts, criterion = bm.train_fns(bases, bases, pixels, mask, targets, CPU, "float32")
        trainable = {
            name: next(p for p in m.parameters() if p.requires_grad) for name, m in bases.items()
        }
        before = {name: p.detach().clone() for name, p in trainable.items()}
        for fn in fns.values():
            assert torch.isfinite(fn())
        for name, p in trainable.items():
            assert not torch.equal(before[name], p)  # one step each: the weights move
        assert bm.state_mib(ours, opts["zoo"]) > bm.state_mib(ours)

        entry = {name: {} for name in bm.IMPLS}
        bm.add_phases(entry, fns, bases, criterion, CPU)
        for name in bm.IMPLS:
            phases = entry[name]["phases_ms"]
            # Every phase was seen by the profiler (a renamed module or a lost hook reads 0).
            assert all(phases[p] > 0 for p in bm.PHASES), (name, phases)
            # The phases cover the step: little of it falls outside them.
            assert abs(phases["unattributed"]) < 0.1 * phases["step"], (name, phases)
            assert sum(phases[p] for p in bm.PHASES) + phases["unattributed"] == pytest.approx(
                phases["step"]
            )
        # The hooks and patches are gone afterwards.
        assert not ours.backbone._forward_hooks and "match_all" not in vars(criterion.matcher)
        assert "_loss_function" not in vars(hf)
    finally:
        for m in bases.values():
            m.eval()
