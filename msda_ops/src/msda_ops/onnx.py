"""ONNX export of the kernel op ``msda_ops::ms_deform_attn_forward``.

The op lowers to standard ONNX (opset >= 16), the reference's ``grid_sample`` composition:
per level a Slice of the value, a Reshape to (N*M, D, H_l, W_l), one ``GridSample``
(bilinear, zeros padding, align_corners=0) on the grid ``2*loc - 1``, then the attention
weights multiply the L*P samples and a ReduceSum adds them up. H_l and W_l are read from
``spatial_shapes`` at run time, so batch and image size stay dynamic; only the number of
levels L is fixed by the export. With ``plugin="trt"`` the op becomes one
``MultiscaleDeformableAttnPlugin_TRT`` node, TensorRT's built-in plugin, instead.

Both exporters are served:

- TorchScript (``torch.onnx.export(..., dynamo=False)``): importing this module registers
  a symbolic function (``import msda_ops`` does that, it imports neither onnx nor
  onnxscript).
- dynamo (``torch.onnx.export(..., dynamo=True)``, the default): pass
  ``custom_translation_table=msda_ops.onnx.translation_table()``.

:func:`export` does either for you.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch

from msda_ops.onnx_lowering import TRT_DOMAIN, OnnxScriptBuilder, TorchScriptBuilder, lower

OP_NAME = "msda_ops::ms_deform_attn_forward"
Plugin = Literal["trt"] | None
_PLUGINS = (None, "trt")
MIN_OPSET = 16  # GridSample

_symbolic_plugin: list[Plugin] = [None]  # the lowering the TorchScript symbolic emits


def _check_plugin(plugin: object) -> None:
    if plugin not in _PLUGINS:
        raise ValueError(f"msda_ops.onnx: plugin must be one of {_PLUGINS}, got {plugin!r}")


def _constant_bool(name: str, value: Any) -> bool:
    """A TorchScript argument that must be a constant, as a Python bool."""
    if isinstance(value, bool):
        return value
    node = value.node()
    const = node.t("value") if node.kind() == "onnx::Constant" else value.toIValue()
    if const is None:
        raise ValueError(
            f"msda_ops.onnx: {name} must be a constant bool at export, got the "
            f"computed value {value.debugName()!r}"
        )
    return bool(const.item() if isinstance(const, torch.Tensor) else const)


def symbolic(
    g: Any,
    value: Any,
    spatial_shapes: Any,
    level_start_index: Any,
    sampling_locations: Any,
    attention_weights: Any,
    softmax: Any,
) -> Any:
    """TorchScript-exporter symbolic of the op (its schema's six arguments)."""
    if g.opset < MIN_OPSET:
        raise ValueError(
            f"msda_ops.onnx: exporting {OP_NAME} needs opset_version >= {MIN_OPSET} "
            f"(GridSample), got {g.opset}"
        )
    return lower(
        TorchScriptBuilder(g),
        value,
        spatial_shapes,
        level_start_index,
        sampling_locations,
        attention_weights,
        _constant_bool("softmax", softmax),
        _symbolic_plugin[-1],
    )


def translation(plugin: Plugin = None) -> Callable[..., Any]:
    """The dynamo exporter's translation of the op (an onnxscript-traced function)."""
    _check_plugin(plugin)

    def ms_deform_attn_forward(
        value: Any,
        spatial_shapes: Any,
        level_start_index: Any,
        sampling_locations: Any,
        attention_weights: Any,
        softmax: bool = False,
    ) -> Any:
        return lower(
            OnnxScriptBuilder(),
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            bool(softmax),
            plugin,
        )

    return ms_deform_attn_forward


def register(plugin: Plugin = None) -> None:
    """(Re)register the TorchScript symbolic; ``plugin="trt"`` emits TensorRT's plugin node.

    Done with ``plugin=None`` when this module is imported. Cheap: imports ``torch.onnx``
    only, never onnx or onnxscript, and builds nothing.
    """
    _check_plugin(plugin)
    _symbolic_plugin[-1] = plugin
    torch.onnx.register_custom_op_symbolic(OP_NAME, symbolic, 1)


def translation_table(plugin: Plugin = None) -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``.

    Loads (compiling on first use) the CPU library that defines the op; when it cannot be
    built the models run on the reference, which exports without help, and the table is
    empty.
    """
    _check_plugin(plugin)
    from msda_ops import ops

    if not ops.load("cpu"):
        return {}
    return {torch.ops.msda_ops.ms_deform_attn_forward.default: translation(plugin)}


@contextlib.contextmanager
def _symbolic_lowering(plugin: Plugin) -> Iterator[None]:
    _check_plugin(plugin)
    _symbolic_plugin.append(plugin)
    try:
        yield
    finally:
        _symbolic_plugin.pop()


def export(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    f: Any,
    *,
    dynamo: bool = True,
    plugin: Plugin = None,
    opset_version: int | None = None,
    **kwargs: Any,
) -> Any:
    """``torch.onnx.export`` with the op's translation in place, for either exporter.

    Args:
        model, args, f: as for :func:`torch.onnx.export`.
        dynamo: use the dynamo exporter (True, torch's default) or the TorchScript one.
        plugin: None lowers the op to standard ONNX (GridSample per level); ``"trt"``
            emits TensorRT's ``MultiscaleDeformableAttnPlugin_TRT`` node instead.
        opset_version: at least 16; default torch's (dynamo) or 17 (TorchScript).
        kwargs: passed on (``dynamic_shapes``, ``input_names``, ``dynamic_axes``...);
            a ``custom_translation_table`` is merged with the op's.

    Returns:
        What :func:`torch.onnx.export` returns (an ``ONNXProgram`` under dynamo).
    """
    _check_plugin(plugin)
    if opset_version is not None and opset_version < MIN_OPSET:
        raise ValueError(
            f"msda_ops.onnx.export: opset_version must be >= {MIN_OPSET} (GridSample), "
            f"got {opset_version}"
        )
    if dynamo:
        table = {
            **translation_table(plugin),
            **(kwargs.pop("custom_translation_table", None) or {}),
        }
        if opset_version is not None:
            kwargs["opset_version"] = opset_version
        return torch.onnx.export(
            model, args, f, dynamo=True, custom_translation_table=table, **kwargs
        )
    if plugin is not None:
        kwargs["custom_opsets"] = {TRT_DOMAIN: 1, **(kwargs.get("custom_opsets") or {})}
    with _symbolic_lowering(plugin), warnings.catch_warnings():
        # The input checks read spatial_shapes while tracing (the op reads it at run time)
        # and the layer branches on static sizes: both traces hold for other sizes.
        warnings.filterwarnings(
            "ignore", category=torch.jit.TracerWarning, module=r"msda_ops\.(checks|module)"
        )
        return torch.onnx.export(
            model, args, f, dynamo=False, opset_version=opset_version or 17, **kwargs
        )


register()
