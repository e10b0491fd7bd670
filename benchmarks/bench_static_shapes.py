"""The cost of static shapes: training steps on batches padded to a size bucket, against the
same batches padded only to their largest image (what the data loader does).

Batches of ``--batch`` images get random aspect ratios (uniform in [1/2, 2]) resized by
the training rule at ``--image-size`` (shorter side ``image_size``, longer side at most
``1333/800`` of it); each is timed as one training step of the zoo model (forward, loss,
backward, AdamW), eager, natural size and bucket-padded interleaved. Reported: median
process CPU time and wall time per step, their ratios (bucket / natural: the price of a
fixed set of shapes), and the ratio of padded pixels.

Run::

    python benchmarks/bench_static_shapes.py --device cpu            # -> results/static_shapes_cpu.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from harness import results_path, write_json

import zoo
from zoo.models.pipeline.resize import resized_size
from zoo.training.compile import pad_to_bucket
from zoo.training.config import TrainConfig
from zoo.training.optim import build_optimizer
from zoo.training.step import training_step


def batch_sizes(rng: random.Random, batch: int, image_size: int) -> list[tuple[int, int]]:
    """``batch`` (H, W) sizes: random aspect ratios resized by the training rule."""
    longest = round(image_size * 1333 / 800)
    sizes = []
    for _ in range(batch):
        aspect = 2 ** rng.uniform(-1, 1)
        sizes.append(resized_size(1000, round(1000 * aspect), image_size, longest))
    return sizes


def make_batch(
    sizes: list[tuple[int, int]], device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Noise images of ``sizes`` padded to the largest, their mask, 5 random boxes each."""
    gen = torch.Generator().manual_seed(seed)
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    pixels = torch.zeros(len(sizes), 3, h, w)
    mask = torch.zeros(len(sizes), h, w, dtype=torch.long)
    targets = []
    for i, (hi, wi) in enumerate(sizes):
        pixels[i, :, :hi, :wi] = torch.randn(3, hi, wi, generator=gen)
        mask[i, :hi, :wi] = 1
        boxes = torch.cat(
            [
                0.2 + 0.6 * torch.rand(5, 2, generator=gen),
                0.1 + 0.2 * torch.rand(5, 2, generator=gen),
            ],
            -1,
        )
        targets.append(
            {
                "labels": torch.randint(0, 91, (5,), generator=gen).to(device),
                "boxes": boxes.to(device),
            }
        )
    return pixels.to(device), mask.to(device), targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="ddetr-two-stage")
    p.add_argument(
        "--overrides",
        nargs="*",
        default=["depth=18", "hidden_dim=128", "ffn_dim=512"],
        help="model sizes (KEY=VALUE)",
    )
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--bucket", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="distinct batches, each timed per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", default=None, help="results name or .json path (default static_shapes_<device>)"
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    overrides = {k: int(v) for k, v in (o.split("=") for o in args.overrides)}
    torch.manual_seed(args.seed)
    model = zoo.create_model(args.model, **overrides).to(device).train()
    criterion = zoo.build_criterion(model.config)
    optimizer = build_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    rng = random.Random(args.seed)
    batches = [
        make_batch(batch_sizes(rng, args.batch, args.image_size), device, i)
        for i in range(args.batches)
    ]
    times: dict[str, dict[str, list[float]]] = {
        k: {"cpu": [], "wall": []} for k in ("natural", "bucket")
    }
    pixels_ratio = []
    for pixels, mask, _ in batches:
        padded = pad_to_bucket(pixels, mask, args.bucket)
        pixels_ratio.append(padded[0][0, 0].numel() / pixels[0, 0].numel())
    for r in range(args.rounds + 1):  # round 0 warms up
        for pixels, mask, targets in batches:
            order = ["natural", "bucket"] if r % 2 else ["bucket", "natural"]
            for kind in order:
                p, m = (
                    (pixels, mask)
                    if kind == "natural"
                    else pad_to_bucket(pixels, mask, args.bucket)
                )
                c0, w0 = time.process_time(), time.perf_counter()
                training_step(model, criterion, optimizer, scaler, p, m, targets, clip_max_norm=0.1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if r:
                    times[kind]["cpu"].append(time.process_time() - c0)
                    times[kind]["wall"].append(time.perf_counter() - w0)
    med = {k: {t: statistics.median(v[t]) for t in ("cpu", "wall")} for k, v in times.items()}
    return {
        "description": "training step on batches padded to a size bucket / padded to their largest image",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "torch_threads": torch.get_num_threads(),
        "median_cpu_s": {k: v["cpu"] for k, v in med.items()},
        "median_wall_s": {k: v["wall"] for k, v in med.items()},
        "cpu_ratio": med["bucket"]["cpu"] / med["natural"]["cpu"],
        "wall_ratio": med["bucket"]["wall"] / med["natural"]["wall"],
        "pixels_ratio_mean": statistics.mean(pixels_ratio),
        "samples_s": times,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    payload = run(args)
    path = write_json(
        results_path(args.output, f"static_shapes_{torch.device(args.device).type}", scratch=False),
        payload,
    )
    print(
        f"bucket {args.bucket}: step cpu x{payload['cpu_ratio']:.3f}, wall x{payload['wall_ratio']:.3f}, "
        f"pixels x{payload['pixels_ratio_mean']:.3f}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
