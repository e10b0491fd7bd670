"""A whole detector to ONNX (or a ``torch.export`` ``.pt2``), for onnxruntime and TensorRT.

The exported graph takes ``pixel_values`` (N, 3, H, W), normalised with the model's
``image_mean``/``image_std`` and unpadded, and returns ``pred_logits`` (N, Q, C) and
``pred_boxes`` (N, Q, 4) normalised cxcywh, as the model's forward does; batch size, height
and width stay dynamic. Post-processing (top-k, box scaling) is left to the caller
(:mod:`zoo.models.pipeline.postprocess` does it on the outputs, as ``predict`` does).

The deformable attention runs on the compiled kernel during the export and lowers through
:mod:`msda_ops.onnx`: standard ONNX (a ``GridSample`` per level, opset >= 16) by default,
TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` node with ``msda_op="trt"``.

The ONNX file explains itself: its ``metadata_props`` (:func:`export_metadata`) hold the
class names, mean/std, the resize rule, the input layout, the box format and the score
function, all a plain onnxruntime script needs (README, "ONNX"); ``zoo detect --model
model.onnx`` reads them (:mod:`zoo.detect.onnx_runner`). ONNX needs the ``export`` extra
(onnx, onnxruntime, onnxscript); without it the error says how to install it.

Exporters: both give files that run in onnxruntime at other batch and image sizes and
agree with PyTorch (tests/test_export.py). The TorchScript exporter (``dynamo=False``,
opset 17) stays the default although torch deprecates it: measured on the tiny test models
(torch 2.14.1, 2-core CPU, loaded machine) both agree with PyTorch to ~1e-6, but the dynamo
exporter took 96 s against 16 s (ddetr), 50 s against 8 s (detr-r50) and 124 s against
12 s (ddetr-two-stage); its deprecation warning is silenced here for that reason. The dynamo exporter (``dynamo=True``) needs opset >= 18:
asked for 17 it converts its graph down and writes a ``Split`` with the opset-18
attribute ``num_outputs``, a file onnxruntime rejects. Its earlier failure on the whole
model ("Node input 'sigmoid_min_1' is not a graph input") came from image sizes read as
Python numbers in the model (``int()`` of a size, ``linspace`` with a size as step count),
which specialised the program to the traced size; the model now keeps them symbolic.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from zoo.detect.onnx_runner import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    load_onnx_session,
    require_export_extra,
    run_onnx,
)

MsdaOp = Literal["onnx", "trt"]
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


def export_metadata(model: nn.Module) -> dict[str, str]:
    """What a runtime needs to use the exported file, as ONNX ``metadata_props`` strings.

    ``class_names``, ``image_mean``, ``image_std`` (JSON lists), ``shortest_edge``,
    ``longest_edge`` (integers), ``resize`` (the rule in words), ``input``, ``outputs``,
    ``box_format``, ``score_function`` (``sigmoid``: independent class probabilities, the
    best ``top_k`` over all (query, class) pairs; ``softmax``: over the classes, the last
    one "no object" dropped), ``top_k``, ``model`` (where the weights came from).
    """
    from zoo.models.config import DetrConfig, ModelConfig
    from zoo.models.pipeline.coco_names import class_names
    from zoo.models.pipeline.resize import inference_size

    config = cast(ModelConfig, model.config)
    shortest, longest = inference_size(config.image_size)
    softmax = isinstance(config, DetrConfig)
    return {
        "model": str(getattr(model, "source", type(model).__name__)),
        "class_names": json.dumps(class_names(config.num_classes, config.class_names)),
        "image_mean": json.dumps(list(config.image_mean)),
        "image_std": json.dumps(list(config.image_std)),
        "shortest_edge": str(shortest),
        "longest_edge": str(longest),
        "resize": (
            "bilinear, antialiased: the shorter side to shortest_edge, or less so that the "
            "longer side fits longest_edge (then t = round(longest_edge * short / long)); "
            "the other side int(t * long / short)"
        ),
        "input": (
            "pixel_values float32 (N, 3, H, W): RGB in [0, 1], resized, then "
            "(x - image_mean) / image_std per channel; one unpadded image per batch entry "
            "(or images of one size)"
        ),
        "outputs": "pred_logits (N, Q, C), pred_boxes (N, Q, 4)",
        "box_format": "cxcywh normalised by the input's (W, H, W, H): scale to the original image",
        "score_function": "softmax" if softmax else "sigmoid",
        "top_k": "0" if softmax else "100",
    }


def write_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Set ``metadata`` as the ``metadata_props`` of the ONNX file ``path`` (rewritten)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


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
        ``path``, whose ``metadata_props`` hold :func:`export_metadata`.

    Raises:
        ModuleNotFoundError: the ``export`` extra is not installed (the message says how).
    """
    require_export_extra("onnx", *(("onnxscript",) if dynamo else ()))
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
        # The TorchScript exporter is kept on purpose (equal results, 6-10x faster: see the
        # module docstring); its deprecation notice is not news to the user.
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message="The feature will be removed", category=DeprecationWarning
        )
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
    write_metadata(path, export_metadata(model))
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
