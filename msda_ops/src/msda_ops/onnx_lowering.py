"""The ONNX graph of ``msda_ops::ms_deform_attn_forward``, for either torch exporter.

:func:`lower` writes the op's nodes through a :class:`Builder`: :class:`TorchScriptBuilder`
wraps the TorchScript exporter's graph context, :class:`OnnxScriptBuilder` the onnxscript
ops the dynamo exporter records. Neither imports onnx or onnxscript before it is used.
"""

from __future__ import annotations

from typing import Any

import torch

# TensorRT's plugin (plugin/multiscaleDeformableAttnPlugin): the ONNX parser finds it by the
# node's op_type and its plugin_version / plugin_namespace attributes; the domain is free.
TRT_DOMAIN = "trt.plugins"
TRT_OP = "MultiscaleDeformableAttnPlugin_TRT"
_INPUT_NAMES = (
    "value",
    "spatial_shapes",
    "level_start_index",
    "sampling_locations",
    "attention_weights",
)
_INT32, _INT64 = 6, 7  # onnx.TensorProto data types, named here to keep onnx unimported
_TORCH_FLOATS = {
    "Float": torch.float32,
    "Double": torch.float64,
    "Half": torch.float16,
    "BFloat16": torch.bfloat16,
}


class Builder:
    """What the lowering needs from an exporter: nodes, constants, static type facts."""

    opset: int

    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> Any:
        raise NotImplementedError

    def const(self, value: int | float | list[int]) -> Any:
        """An int64 scalar, a float32 scalar, or a 1-D int64 tensor."""
        raise NotImplementedError

    def ints(self, values: list[int]) -> Any:
        return self.const(values)

    def scalar_like(self, value: float, like: Any) -> Any:
        """A scalar of the element type of ``like``."""
        return self.op("CastLike", self.const(value), like)

    def dim(self, x: Any, axis: int) -> int | None:
        """The static size of ``x`` along ``axis``, None when dynamic or unknown."""
        raise NotImplementedError

    def dtype(self, x: Any) -> object | None:
        """A token equal for equal element types, None when unknown."""
        raise NotImplementedError

    def is_int64(self, x: Any) -> bool:
        raise NotImplementedError


class TorchScriptBuilder(Builder):
    def __init__(self, g: Any) -> None:
        self.g = g
        self.opset = int(g.opset)

    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> Any:
        typed: dict[str, Any] = {}
        for key, val in attrs.items():
            if isinstance(val, str):
                typed[f"{key}_s"] = val
            elif isinstance(val, float):
                typed[f"{key}_f"] = val
            else:  # int, bool, or a list of ints
                typed[f"{key}_i"] = list(val) if isinstance(val, (list, tuple)) else int(val)
        return self.g.op(op_type, *inputs, **typed)

    def const(self, value: int | float | list[int]) -> Any:
        dtype = torch.float32 if isinstance(value, float) else torch.int64
        return self.g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

    def scalar_like(self, value: float, like: Any) -> Any:
        # This exporter does not fold CastLike of a constant.
        dtype = _TORCH_FLOATS.get(like.type().scalarType())
        if dtype is None:
            return super().scalar_like(value, like)
        return self.g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

    def dim(self, x: Any, axis: int) -> int | None:
        sizes = x.type().varyingSizes()
        return None if sizes is None or sizes[axis] is None else int(sizes[axis])

    def dtype(self, x: Any) -> object | None:
        return x.type().scalarType()

    def is_int64(self, x: Any) -> bool:
        return x.type().scalarType() == "Long"


class OnnxScriptBuilder(Builder):
    def __init__(self) -> None:
        import onnxscript

        self.onnxscript = onnxscript
        self.ops = onnxscript.opset18
        self.opset = 18

    def op(self, op_type: str, *inputs: Any, **attrs: Any) -> Any:
        if op_type == f"{TRT_DOMAIN}::{TRT_OP}":
            return self._trt_op()(*inputs, **attrs)
        return getattr(self.ops, op_type)(*inputs, **attrs)

    def _trt_op(self) -> Any:
        # The exporter records only ops with a schema: describe the plugin's interface.
        from onnx.defs import OpSchema

        integers = ("spatial_shapes", "level_start_index")
        inputs = [
            OpSchema.FormalParameter(name, "tensor(int32)" if name in integers else "T")
            for name in _INPUT_NAMES
        ]
        schema = OpSchema(
            TRT_OP,
            TRT_DOMAIN,
            1,
            inputs=inputs,
            outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
            attributes=[
                OpSchema.Attribute(name, OpSchema.AttrType.STRING, required=False)
                for name in ("plugin_version", "plugin_namespace")
            ],
        )
        values = self.onnxscript.values
        return values.Op(values.Opset(TRT_DOMAIN, 1), TRT_OP, schema)

    def const(self, value: int | float | list[int]) -> Any:
        if isinstance(value, list):
            return self.ops.Constant(value_ints=value)
        if isinstance(value, float):
            return self.ops.Constant(value_float=value)
        return self.ops.Constant(value_int=value)

    def dim(self, x: Any, axis: int) -> int | None:
        shape = x.shape
        if shape is None:
            return None
        size = shape[axis]
        return size if isinstance(size, int) else None

    def dtype(self, x: Any) -> object | None:
        return x.dtype

    def is_int64(self, x: Any) -> bool:
        return x.dtype is not None and int(x.dtype) == _INT64


def _shape_concat(b: Builder, *parts: Any) -> Any:
    """A 1-D int64 shape from constant lists and shape tensors."""
    return b.op("Concat", *(b.ints(p) if isinstance(p, list) else p for p in parts), axis=0)


def lower(
    b: Builder,
    value: Any,
    spatial_shapes: Any,
    level_start_index: Any,
    sampling_locations: Any,
    attention_weights: Any,
    softmax: bool,
    plugin: str | None,
) -> Any:
    """The op as ONNX nodes; shapes as in :func:`msda_ops.ms_deform_attn`, out (N, Lq, M*D)."""
    n_levels = b.dim(spatial_shapes, 0) or b.dim(sampling_locations, 3)
    if n_levels is None:
        raise ValueError(
            "msda_ops.onnx: the number of levels L must be static at export, got "
            "spatial_shapes of shape (L, 2) and sampling_locations (N, Lq, M, L, P, 2) "
            "with L unknown"
        )
    # Mixed float types (autocast) are computed in the value's type.
    for_value = b.dtype(value)
    if for_value is None or b.dtype(sampling_locations) != for_value:
        sampling_locations = b.op("CastLike", sampling_locations, value)
    if for_value is None or b.dtype(attention_weights) != for_value:
        attention_weights = b.op("CastLike", attention_weights, value)
    if softmax:
        # Over the L*P samples of each (query, head): via (N, Lq, M, L*P) and back.
        flat = b.op("Reshape", attention_weights, b.ints([0, 0, 0, -1]))
        attention_weights = b.op(
            "Reshape", b.op("Softmax", flat, axis=-1), b.op("Shape", attention_weights)
        )
    if plugin == "trt":
        return _lower_trt(
            b, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    if not b.is_int64(spatial_shapes):
        spatial_shapes = b.op("Cast", spatial_shapes, to=_INT64)
    if not b.is_int64(level_start_index):
        level_start_index = b.op("Cast", level_start_index, to=_INT64)

    # (N, S, M, D) -> (N, M, D, S) -> (N*M, D, S): a level is a Slice of the last axis.
    value = b.op("Transpose", value, perm=[0, 2, 3, 1])
    value = b.op("Reshape", value, _shape_concat(b, [-1], b.op("Shape", value, start=2)))
    # (N, Lq, M, L, P, 2) -> (N, M, Lq, L, P, 2) -> (N*M, Lq, L, P, 2), mapped to [-1, 1].
    two, one = b.scalar_like(2.0, value), b.scalar_like(1.0, value)
    grid = b.op("Sub", b.op("Mul", sampling_locations, two), one)
    # GridSample reads garbage at +-inf (onnxruntime 1.32); 3 is outside every map, as inf is.
    grid = b.op("Where", b.op("IsInf", grid), b.scalar_like(3.0, value), grid)
    grid = b.op("Transpose", grid, perm=[0, 2, 1, 3, 4, 5])
    grid = b.op("Reshape", grid, _shape_concat(b, [-1], b.op("Shape", grid, start=2)))
    # GridSample's "bilinear" is called "linear" from opset 20 on.
    mode = "linear" if b.opset >= 20 else "bilinear"
    sampled = []
    for lvl in range(n_levels):
        index = b.const(lvl)
        hw = b.op("Gather", spatial_shapes, index, axis=0)  # (2,) = (H_l, W_l)
        start = b.op("Gather", level_start_index, b.ints([lvl]), axis=0)  # (1,)
        end = b.op("Add", start, b.op("ReduceProd", hw, keepdims=0))
        level = b.op("Slice", value, start, end, b.ints([2]))  # (N*M, D, H*W)
        level = b.op("Reshape", level, _shape_concat(b, [0, 0], hw))  # (N*M, D, H, W)
        level_grid = b.op("Gather", grid, index, axis=2)  # (N*M, Lq, P, 2)
        sampled.append(
            b.op("GridSample", level, level_grid, mode=mode, padding_mode="zeros", align_corners=0)
        )  # (N*M, D, Lq, P)
    samples = b.op("Concat", *sampled, axis=-1) if n_levels > 1 else sampled[0]
    # (N, Lq, M, L, P) -> (N, M, Lq, L*P) -> (N*M, 1, Lq, L*P)
    weights = b.op("Transpose", attention_weights, perm=[0, 2, 1, 3, 4])
    weights = b.op("Reshape", weights, b.ints([0, 0, 0, -1]))
    weights = b.op("Reshape", weights, _shape_concat(b, [-1, 1], b.op("Shape", weights, start=2)))
    out = b.op("ReduceSum", b.op("Mul", samples, weights), b.ints([-1]), keepdims=0)
    # (N*M, D, Lq) -> (N, M*D, Lq) -> (N, Lq, M*D)
    batch = b.op("Shape", attention_weights, start=0, end=1)
    out = b.op("Reshape", out, _shape_concat(b, batch, [-1], b.op("Shape", out, start=2)))
    return b.op("Transpose", out, perm=[0, 2, 1])


def _lower_trt(
    b: Builder,
    value: Any,
    spatial_shapes: Any,
    level_start_index: Any,
    sampling_locations: Any,
    attention_weights: Any,
) -> Any:
    """One TensorRT plugin node: it takes int32 shapes and returns (N, Lq, M, D)."""
    out = b.op(
        f"{TRT_DOMAIN}::{TRT_OP}",
        value,
        b.op("Cast", spatial_shapes, to=_INT32),
        b.op("Cast", level_start_index, to=_INT32),
        sampling_locations,
        attention_weights,
        plugin_version="1",
        plugin_namespace="",
    )
    return b.op("Reshape", out, b.ints([0, 0, -1]))
