"""The ``export`` command: a model to ONNX (onnxruntime, TensorRT) or a ``.pt2`` program::

python -m zoo export shapes-demo model.onnx
python -m zoo export runs/x model.onnx --msda-op trt       # TensorRT's plugin node
python -m zoo export ddetr model.pt2 --format pt2          # torch.export

The file takes ``pixel_values`` (N, 3, H, W), normalised with the model's mean and std,
and returns ``pred_logits`` and ``pred_boxes``; batch and image size are dynamic. Its
metadata holds what a runtime needs (class names, mean/std, resize rule, box format, score
function); ``zoo detect --model model.onnx`` runs it. ONNX needs the ``export`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli.args import Runner, checkpoint_or_name


def declare_export(parser: argparse.ArgumentParser) -> Runner:
    """``zoo export MODEL OUT [--format onnx|pt2] [--msda-op onnx|trt]``."""
    parser.add_argument("model", help="a name (zoo list), Hub repo, folder, .pth or training run")
    parser.add_argument("out", type=Path, help="file to write (.onnx or .pt2)")
    parser.add_argument(
        "--format",
        choices=("onnx", "pt2"),
        default=None,
        help="default: from OUT's suffix (.pt2 -> pt2, else onnx)",
    )
    parser.add_argument(
        "--msda-op",
        choices=("onnx", "trt"),
        default="onnx",
        help="deformable attention as standard ONNX ops (GridSample per level) or as "
        "TensorRT's MultiscaleDeformableAttnPlugin_TRT node",
    )
    parser.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter (both give equal files; torchscript is faster)",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: 17 torchscript, 18 dynamo)"
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the ONNX file in onnxruntime at another size and compare with PyTorch",
    )
    return run_export


def run_export(args: argparse.Namespace) -> int:
    """Load the model and write it with :mod:`zoo.export`."""
    import zoo
    from zoo.export import check_onnx, export_onnx, export_pt2

    fmt = args.format or ("pt2" if args.out.suffix == ".pt2" else "onnx")
    if fmt == "pt2" and args.msda_op != "onnx":
        raise ValueError("--msda-op applies to ONNX files only (--format onnx)")
    if fmt == "onnx":
        from zoo.detect.onnx_runner import require_export_extra

        # Before the model loads: a missing package is said at once, with its extra.
        needed = ("onnx", "onnxscript") if args.exporter == "dynamo" else ("onnx",)
        require_export_extra(*needed, *(("onnxruntime",) if args.check else ()))
    model = zoo.load(checkpoint_or_name(args.model), revision=args.revision, device="cpu").eval()
    if fmt == "pt2":
        export_pt2(model, args.out)
    else:
        export_onnx(
            model,
            args.out,
            msda_op=args.msda_op,
            opset=args.opset,
            dynamo=args.exporter == "dynamo",
        )
    size = args.out.stat().st_size / 1e6
    print(f"{args.model} -> {args.out} ({fmt}, {size:.1f} MB)")
    if args.check:
        if fmt != "onnx" or args.msda_op != "onnx":
            raise ValueError("--check runs standard ONNX files (--format onnx --msda-op onnx)")
        error = check_onnx(model, args.out)
        print(f"onnxruntime vs PyTorch at another size: max abs difference {error:.2e}")
    return 0
