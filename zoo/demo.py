"""``make demo``: object detection offline, with the small model bundled in the package.

With no arguments the demo renders a few synthetic shapes images (:mod:`zoo.data.shapes`,
a fixed seed), detects the shapes with the bundled Deformable DETR
(``zoo/pretrained/shapes-ddetr``, ``zoo.load("shapes-demo")``), writes the annotated pictures and a JSON of the detections, and
prints one line per image comparing the detections with the known ground truth::

    python -m zoo.demo                                   # -> demo-output/
    python -m zoo.demo --images 'photos/*.jpg' --model ddetr-two-stage   # needs the Hub

``--images`` takes files, folders or globs. A model other than the bundled one (a name
of ``zoo.list_models()``, a Hub id, a folder) goes through :func:`zoo.load`; the COCO
models need real photos, so they need ``--images``. (The engines under the models,
timed against their references: ``make demo-engines``, ``benchmarks/bench_engines.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.cli.args import add_inference_args
from zoo.data.shapes import CLASSES, ShapesSpec, render_image

# The bundled model is package data (in the wheel too): zoo.load("shapes-demo") loads it.
DEFAULT_MODEL = Path(__file__).resolve().parent / "pretrained" / "shapes-ddetr"
DEFAULT_OUT = Path("demo-output")
IOU_MATCH = 0.5


class DemoError(Exception):
    """A problem the user can fix; ``main`` prints it as one line and exits with 1."""


@dataclass(frozen=True)
class GroundTruth:
    """One annotated object of a generated image: class name and (x0, y0, x1, y1) box."""

    name: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageSummary:
    """How one generated image went: objects detected, in the ground truth, and found."""

    image: str
    detected: int
    truth: int
    found: int


# ---------------------------------------------------------------- the detection demo


def demo_rng(seed: int) -> np.random.Generator:
    """The random stream of the demo images.

    Seeded like :func:`zoo.data.shapes.write_split` with the "split" name ``demo``, so the
    demo never shows an image of the train or val split made with the same seed.
    """
    return np.random.default_rng([seed, sum(b"demo")])


def generate_images(
    folder: Path, num_images: int, seed: int, size: int = 128
) -> tuple[list[Path], list[list[GroundTruth]]]:
    """Render ``num_images`` shapes images into ``folder`` as ``shapes_01.png``...

    The ground truth also goes to ``folder/ground_truth.json``.

    Returns:
        The image paths and, per image, its objects.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng, spec = demo_rng(seed), ShapesSpec(size=size)
    paths: list[Path] = []
    truths: list[list[GroundTruth]] = []
    for i in range(1, num_images + 1):
        image, objects = render_image(rng, spec)
        path = folder / f"shapes_{i:02d}.png"
        image.save(path)
        paths.append(path)
        truth = []
        for obj in objects:
            x, y, w, h = obj["bbox"]  # COCO (x, y, w, h) around the visible pixels
            truth.append(GroundTruth(CLASSES[obj["category"]], (x, y, x + w, y + h)))
        truths.append(truth)
    record = [
        {"image": p.name, "objects": [{"name": g.name, "box": list(g.box)} for g in truth]}
        for p, truth in zip(paths, truths, strict=True)
    ]
    (folder / "ground_truth.json").write_text(json.dumps(record, indent=1) + "\n")
    return paths, truths


def count_found(detections: Sequence[dict[str, Any]], truth: Sequence[GroundTruth]) -> int:
    """Ground-truth objects found: by a detection of the same class with IoU >= 0.5.

    Matching is one-to-one, as in COCO evaluation: detections take, highest score
    first, the unmatched object of their class they overlap most; a duplicate box
    does not find a second object.
    """
    from torchvision.ops import box_iou

    if not detections or not truth:
        return 0
    iou = box_iou(
        torch.tensor([d["box"] for d in detections], dtype=torch.float64),
        torch.tensor([g.box for g in truth], dtype=torch.float64),
    )
    taken = [False] * len(truth)
    for d in sorted(range(len(detections)), key=lambda k: -detections[k]["score"]):
        best, best_iou = -1, IOU_MATCH
        for g, obj in enumerate(truth):
            value = float(iou[d, g])
            if not taken[g] and obj.name == detections[d]["name"] and value >= best_iou:
                best, best_iou = g, value
        if best >= 0:
            taken[best] = True
    return sum(taken)


def summarize(
    records: Sequence[dict[str, Any]], truths: Sequence[Sequence[GroundTruth]]
) -> list[ImageSummary]:
    """One :class:`ImageSummary` per image, from ``detect_files``' records."""
    return [
        ImageSummary(
            Path(r["image"]).name,
            len(r["detections"]),
            len(truth),
            count_found(r["detections"], truth),
        )
        for r, truth in zip(records, truths, strict=True)
    ]


def summary_lines(summaries: Sequence[ImageSummary]) -> list[str]:
    """The table printed after detecting generated images: a line per image and a total."""
    width = max([len("image"), *(len(s.image) for s in summaries)])
    lines = [f"  {'image':<{width}}  truth  detected  found"]
    for s in summaries:
        lines.append(f"  {s.image:<{width}}  {s.truth:>5}  {s.detected:>8}  {s.found}/{s.truth}")
    truth = sum(s.truth for s in summaries)
    detected = sum(s.detected for s in summaries)
    found = sum(s.found for s in summaries)
    lines.append(f"  {'all':<{width}}  {truth:>5}  {detected:>8}  {found}/{truth}")
    lines.append(f"  (found: a detection of the right class with IoU >= {IOU_MATCH})")
    return lines


def detections_line(record: dict[str, Any], limit: int = 5) -> str:
    """``photo.jpg: 3 detections: person 0.98, dog 0.91, ...`` for one image."""
    dets = sorted(record["detections"], key=lambda d: -d["score"])
    shown = ", ".join(f"{d['name']} {d['score']:.2f}" for d in dets[:limit])
    more = f", ... ({len(dets) - limit} more)" if len(dets) > limit else ""
    noun = "detection" if len(dets) == 1 else "detections"
    return f"  {Path(record['image']).name}: {len(dets)} {noun}" + (
        f": {shown}{more}" if dets else ""
    )


def is_shapes_model(model: nn.Module) -> bool:
    """Whether ``model`` names the shapes classes (ignoring "N/A" for unused labels)."""
    names = set(getattr(model.config, "class_names", ())) - {"N/A"}
    return names == set(CLASSES)


def load_model(source: str | Path | None, device: torch.device) -> nn.Module:
    """The bundled model (``source`` None) or any :func:`zoo.load` source, in eval mode.

    Raises:
        DemoError: the bundled model is missing, or ``zoo.load`` cannot find the weights
            (offline, unknown name, not a model folder).
    """
    import zoo

    if source is None:
        source = DEFAULT_MODEL
        if not (source / "model.safetensors").is_file():
            raise DemoError(
                f"the bundled demo model is missing: {shown(source)} (config.json + "
                "model.safetensors). It is a small Deformable DETR trained on the synthetic "
                "shapes data; README.md gives the command that trains it. Or pass "
                "--model NAME|PATH with --images."
            )
    try:
        model = zoo.load(source)
    except (OSError, ValueError) as e:  # offline (WeightsNotFoundError), unknown name...
        raise DemoError(str(e)) from e
    return model.to(device).eval()


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _check_outputs_safe(paths: Sequence[Path], out: Path) -> None:
    """Refuse to overwrite an input image with its annotated copy (same folder and name)."""
    targets = {(out.resolve() / f"{p.stem}.png") for p in paths}
    clash = [p for p in paths if p.resolve() in targets]
    if clash:
        raise DemoError(
            f"--out {out} would overwrite input image {clash[0]} with its annotated copy; "
            "choose another --out"
        )


def run_detection_demo(args: argparse.Namespace) -> None:
    """The demo proper (see the module docstring). Raises :class:`DemoError`."""
    from zoo.detect.files import detect_files, find_images, unique_stems

    source: str | Path | None = args.model
    if source is not None and Path(source).expanduser().exists():
        source = Path(source).expanduser()  # a local folder or checkpoint
    if not args.images and isinstance(source, str):
        # Checked before loading: a Hub model would otherwise be downloaded for nothing.
        raise DemoError(
            f"--model {args.model}: the COCO models need real photos; pass them with "
            "--images (make demo MODEL=... IMAGES='photos/*.jpg')"
        )
    paths: list[Path] = []
    if args.images:
        try:
            paths = find_images([os.path.expanduser(i) for i in args.images])
        except FileNotFoundError as e:
            raise DemoError(str(e)) from e
        _check_outputs_safe(paths, args.out)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(source, device)
    source = source or DEFAULT_MODEL
    shapes = is_shapes_model(model)
    if not args.images and not shapes:
        raise DemoError(
            f"{args.model} is not a shapes model (its classes are not {', '.join(CLASSES)}); "
            "pass real photos with --images"
        )
    params = sum(p.numel() for p in model.parameters()) / 1e6
    name = shown(source) if isinstance(source, Path) else str(model.source)
    print(f"model: {name} ({params:.1f} M parameters, {device})")

    truths: list[list[GroundTruth]] = []
    if not args.images:
        folder = args.out / "images"
        paths, truths = generate_images(folder, args.num_images, args.seed, args.size)
        print(
            f"generated {len(paths)} shapes images ({args.size}x{args.size} px, seed "
            f"{args.seed}) in {shown(folder)}/ (ground truth: ground_truth.json there)"
        )
    records = detect_files(
        model,
        paths,
        args.out,
        threshold=args.threshold,
        batch_size=args.batch_size,
        one_json=True,
        progress=bool(args.images),
        image_size=args.image_size,
        # Generated shapes are 128 pixels: enlarged, their tags can be read.
        draw_scale=args.view_scale if truths else 1,
    )
    if truths:
        print(f"detections above score {args.threshold}, against the ground truth:")
        for line in summary_lines(summarize(records, truths)):
            print(line)
    else:
        print(f"detections above score {args.threshold}:")
        for record in records:
            print(detections_line(record))
    # detect_files names each picture after its input's stem (numbered on clashes).
    names = [f"{stem}.png" for stem in unique_stems(paths)]
    listed = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
    print(f"annotated images: {shown(args.out)}/ ({len(names)} PNGs: {listed})")
    print(f"detections (JSON): {shown(args.out / 'detections.json')}")


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The demo's options."""
    parser = argparse.ArgumentParser(
        prog="python -m zoo.demo",
        description="Detect objects offline with the bundled shapes model (or any zoo model "
        "with --images) and write annotated pictures.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"a zoo name (zoo list), Hub id or folder; default: the bundled {DEFAULT_MODEL.name}",
    )
    parser.add_argument(
        "--images", nargs="+", default=None, help="image files, folders or globs (quoted)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--num-images", type=int, default=6, help="shapes images to generate")
    parser.add_argument("--threshold", type=float, default=0.3, help="minimum score to keep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--size", type=int, default=128, help="side of the generated images")
    add_inference_args(parser)
    parser.add_argument(
        "--view-scale",
        type=int,
        default=4,
        help="draw the generated images this many times larger (1: as generated)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit code (1 with a one-line message on errors)."""
    args = build_parser().parse_args(argv)
    if args.num_images < 1:
        print("error: --num-images must be at least 1", file=sys.stderr)
        return 1
    try:
        run_detection_demo(args)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
