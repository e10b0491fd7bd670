"""A whole detector to ONNX (or a ``torch.export`` ``.pt2``), for onnxruntime and TensorRT.

The exported graph takes ``pixel_values`` (N, 3, H, W), normalised with the model's
``image_mean``/``image_std`` and unpadded, and returns ``pred_logits`` (N, Q, C) and
``pred_boxes`` (N, Q, 4) normalised cxcywh, as the model's forward does; batch size, height
and width stay dynamic. Post-processing (top-k, box scaling) is left to the caller
(:mod:`zoo.models.pipeline.postprocess` does it on the outputs, as ``predict`` does).

The deformable attention runs on the compiled kernel during the export and lowers through
:mod:`msda_ops.onnx`: standard ONNX (a ``GridSample`` per level, opset >= 16) by default,
TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` node with ``msda_op="trt"``.

Exporters: both give files that run in onnxruntime at other batch and image sizes and
agree with PyTorch (tests/test_export.py). The TorchScript exporter (``dynamo=False``,
opset 17) is the default because it takes seconds where the dynamo exporter takes 10-20
times longer on the same model. The dynamo exporter (``dynamo=True``) needs opset >= 18:
asked for 17 it converts its graph down and writes a ``Split`` with the opset-18
attribute ``num_outputs``, a file onnxruntime rejects. Its earlier failure on the whole
model ("Node input 'sigmoid_min_1' is not a graph input") came from image sizes read as
Python numbers in the model (``int()`` of a size, ``linspace`` with a size as step count),
which specialised the program to the traced size; the model now keeps them symbolic.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

MsdaOp = Literal["onnx", "trt"]
INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["pred_logits", "pred_boxes"]
DEFAULT_OPSET = 17  # TorchScript exporter
DYNAMO_OPSET = 18  # the lowest the dynamo exporter writes valid files for
# The traced example: every level at least 2x2 (GroupNorm of the coarsest level needs more
# than one value per group), not square so that height and width cannot be confused.
EXAMPLE_SIZE = (160, 224)


class OutputsOnly(nn.Module):
    """``model`` returning ``(pred_logits, pred_boxes)`` only (no auxiliary outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> ``pred_logits`` (N, Q, C), ``pred_boxes`` (N, Q, 4)."""
        out = self.model(pixel_values)
        return out["pred_logits"], out["pred_boxes"]


def example_input(
    batch: int = 2, size: tuple[int, int] = EXAMPLE_SIZE, device: str | torch.device = "cpu"
) -> Tensor:
    """The (batch, 3, H, W) random images traced at export."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *size, generator=gen).to(device)


@contextlib.contextmanager
def _kernel_backend() -> Iterator[None]:
    import msda_ops

    with msda_ops.use_backend("kernel"):
        yield


def _check(msda_op: str, opset: int) -> None:
    if msda_op not in ("onnx", "trt"):
        raise ValueError(f"export: msda_op must be 'onnx' or 'trt', got {msda_op!r}")
    if opset < 16:
        raise ValueError(f"export: opset must be >= 16 (GridSample), got {opset}")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    msda_op: MsdaOp = "onnx",
    opset: int | None = None,
    dynamo: bool = False,
    example: Tensor | None = None,
) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width.

    Args:
        model: a zoo detector (evaluation mode is set on a copy of the wrapper only).
        path: the ``.onnx`` file to write (its folder is created).
        msda_op: ``"onnx"``: the deformable attention as standard ONNX ops; ``"trt"``:
            TensorRT's plugin node (that file needs TensorRT, onnxruntime cannot run it).
        opset: ONNX opset; default 17 (TorchScript) or 18 (dynamo, its minimum).
        dynamo: torch's dynamo exporter instead of the TorchScript one.
        example: the traced input (default :func:`example_input`).

    Returns:
        ``path``.
    """
    import msda_ops.onnx

    opset = opset or (DYNAMO_OPSET if dynamo else DEFAULT_OPSET)
    _check(msda_op, opset)
    if dynamo and opset < DYNAMO_OPSET:
        raise ValueError(
            f"export: the dynamo exporter needs opset >= {DYNAMO_OPSET} (below it writes an "
            f"invalid Split), got {opset}; use dynamo=False for opset {opset}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = OutputsOnly(model).eval()
    device = next(model.parameters()).device
    example = example if example is not None else example_input(device=device)
    plugin: Literal["trt"] | None = "trt" if msda_op == "trt" else None
    kwargs: dict[str, Any] = {"input_names": INPUT_NAMES, "output_names": OUTPUT_NAMES}
    if dynamo:
        kwargs["dynamic_shapes"] = (_dims(),)
    else:
        kwargs["dynamic_axes"] = {
            "pixel_values": {0: "batch", 2: "height", 3: "width"},
            "pred_logits": {0: "batch"},
            "pred_boxes": {0: "batch"},
        }
    with _kernel_backend(), torch.no_grad(), warnings.catch_warnings():
        # Shape arithmetic traced as Python numbers holds for other sizes (checked by tests).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        program = msda_ops.onnx.export(
            wrapper,
            (example,),
            None if dynamo else str(path),
            dynamo=dynamo,
            plugin=plugin,
            opset_version=opset,
            **kwargs,
        )
    if dynamo:
        program.save(str(path))
    return path


def _dims() -> dict[int, Any]:
    # Images of at least 65 pixels a side: below, the coarsest level (stride 64) of a
    # 4-level model would be 1x1, where the traced graph differs.
    return {
        0: torch.export.Dim("batch", max=1024),
        2: torch.export.Dim("height", min=65, max=8192),
        3: torch.export.Dim("width", min=65, max=8192),
    }


def export_pt2(model: nn.Module, path: str | Path, *, example: Tensor | None = None) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``), dynamic batch and size.

    Load it with ``torch.export.load(path).module()(pixel_values)``; it returns
    ``(pred_logits, pred_boxes)``. The op stays ``msda_ops::ms_deform_attn_forward``, so
    ``import msda_ops`` must precede loading.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = OutputsOnly(model).eval()
    device = next(model.parameters()).device
    example = example if example is not None else example_input(device=device)
    dims = _dims()
    with _kernel_backend(), torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=(dims,))
    torch.export.save(program, str(path))
    return path


def load_onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session of ``path`` (onnxruntime must be installed)."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session: Any, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """``pred_logits``, ``pred_boxes`` of an onnxruntime session on (N, 3, H, W) images."""
    logits, boxes = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: pixel_values.cpu().numpy()})
    return torch.from_numpy(cast(Any, logits)), torch.from_numpy(cast(Any, boxes))


def check_onnx(model: nn.Module, path: str | Path, size: tuple[int, int] = (136, 200)) -> float:
    """The largest absolute difference between ``path`` in onnxruntime and ``model``.

    Compared on one random batch of 2 images of ``size`` (not the traced one), over
    ``pred_logits`` and ``pred_boxes``.
    """
    images = example_input(2, size)
    session = load_onnx_session(path)
    with torch.no_grad():
        want = OutputsOnly(model.cpu()).eval()(images)
    got = run_onnx(session, images)
    return max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
