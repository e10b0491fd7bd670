"""The ``list`` and ``convert`` commands: the named models, and weights to the zoo format::

python -m zoo list
python -m zoo convert r50_deformable_detr-checkpoint.pth my-ddetr
python -m zoo convert runs/x my-model     # a training run's latest checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.args import Runner, checkpoint_or_name, model_source, parse_overrides

# Parameters of each variant's default configuration, as data: counting them builds the
# model (torch, seconds); `zoo list` answers without importing torch. A test checks every
# entry against zoo.list_models(); a variant missing here is counted the slow way.
PARAM_COUNTS = {
    "ddetr": 40_069_665,
    "ddetr-refine": 40_849_660,
    "ddetr-single-scale": 34_066_593,
    "ddetr-two-stage": 41_181_529,
    "detr-r101": 60_464_672,
    "detr-r101-dc5": 60_464_672,
    "detr-r50": 41_524_768,
    "detr-r50-dc5": 41_524_768,
}


def declare_list(parser: argparse.ArgumentParser) -> Runner:
    """``zoo list``: the named models, their checkpoints and published COCO AP."""
    return run_list


def list_rows() -> list[tuple[str, str, str, str, str, str]]:
    """The rows of :func:`zoo.list_models` as printed, read from the catalog (no torch)."""
    from zoo.models.registry.catalog import get_bundled, get_variant, list_bundled, list_variants
    from zoo.models.registry.factory import ModelRecord, list_models, safetensors_numel

    records = []
    for name in list_variants():
        info = get_variant(name)
        if name not in PARAM_COUNTS:
            records.append(next(r for r in list_models() if r.name == name))
            continue
        records.append(
            ModelRecord(
                name,
                info.hf_hub_id,
                info.hf_revision,
                info.coco_ap,
                PARAM_COUNTS[name],
                info.license,
            )
        )
    for name in list_bundled():
        bundled = get_bundled(name)
        assert bundled is not None
        numel = safetensors_numel(bundled.path / "model.safetensors")
        records.append(ModelRecord(name, None, "bundled", None, numel, "Apache-2.0"))
    return [
        (
            r.name,
            r.repo_id or "-",
            r.revision[:12] if r.revision else "main (not pinned)",
            f"{r.coco_ap:.1f}" if r.coco_ap is not None else "-",
            f"{r.num_params / 1e6:.1f}M",
            r.license or "-",
        )
        for r in records
    ]


def run_list(args: argparse.Namespace) -> int:
    """Print a table of :func:`zoo.list_models`."""
    header = ("name", "Hub repository", "revision", "COCO AP", "params", "license")
    rows = list_rows()
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def declare_convert(parser: argparse.ArgumentParser) -> Runner:
    """``zoo convert SRC DST``: an official .pth or transformers folder to the zoo format."""
    parser.add_argument(
        "src", type=model_source, help="official .pth, transformers folder, Hub repo or name"
    )
    parser.add_argument("dst", type=Path, help="folder to write (config.json, model.safetensors)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="configuration a .pth does not record, e.g. nheads=8 num_queries=300",
    )
    return run_convert


def run_convert(args: argparse.Namespace) -> int:
    """Load ``src`` with :func:`zoo.load` and write it with :func:`zoo.save_pretrained`."""
    import zoo

    # A training run's folder converts its latest checkpoint.
    src = checkpoint_or_name(args.src)
    model = zoo.load(src, revision=args.revision, **parse_overrides(args.overrides))
    zoo.save_pretrained(model, args.dst)
    print(f"{args.src} -> {args.dst} ({model.load_report})")
    return 0
