"""An exported ONNX detector run in onnxruntime, as ``zoo detect --model model.onnx`` does.

Everything comes from the file's ``metadata_props`` (written by :func:`zoo.export.export_onnx`):
images go through the same :func:`~zoo.models.pipeline.preprocess.preprocess` as
``predict`` (the one resize rule, the model's mean/std), one image per run (the graph has
no padding mask), and the outputs through the same post-processing (softmax or sigmoid
top-k, boxes scaled to each image and clipped). So the detections equal the PyTorch
model's, within the exporter's rounding (tests/test_export_metadata.py).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from zoo.models.pipeline.postprocess import (
    Predictions,
    check_threshold,
    postprocess_softmax,
    postprocess_topk,
)
from zoo.models.pipeline.preprocess import ImageInput, edges_for, image_list, preprocess_for

INPUT_NAMES = ["pixel_values"]
OUTPUT_NAMES = ["pred_logits", "pred_boxes"]
# The distribution and extra that bring the ONNX packages (pyproject.toml).
EXPORT_EXTRA = "detr-zoo[export]"
# What a user types: msda-ops is not on PyPI, so the extra installs from a checkout, and
# the extra's own packages (the same bounds as pyproject.toml) install anywhere.
EXPORT_HINT = (
    "pip install 'onnx>=1.18' 'onnxruntime>=1.22' 'onnxscript>=0.5' (the "
    f"'{EXPORT_EXTRA}' extra; from a checkout: pip install ./msda_ops '.[export]')"
)
REQUIRED_KEYS = ("class_names", "image_mean", "image_std", "shortest_edge", "longest_edge")


def require_export_extra(*modules: str, what: str = "zoo export") -> None:
    """Raise ``ModuleNotFoundError`` naming the ``export`` extra unless ``modules`` import.

    Default: onnx, onnxruntime and onnxscript (what :func:`export_onnx` and ``--check`` use).
    """
    missing = [
        m
        for m in modules or ("onnx", "onnxruntime", "onnxscript")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ModuleNotFoundError(
            f"{what} needs the export extra ({', '.join(missing)} not installed): {EXPORT_HINT}"
        )


def load_onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session of ``path`` (the ``export`` extra must be installed)."""
    require_export_extra("onnxruntime", what="running an ONNX file")
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session: Any, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """``pred_logits``, ``pred_boxes`` of an onnxruntime session on (N, 3, H, W) images."""
    logits, boxes = session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: pixel_values.cpu().numpy()})
    return torch.from_numpy(cast(Any, logits)), torch.from_numpy(cast(Any, boxes))


@dataclass(frozen=True)
class OnnxModelInfo:
    """The exported model's description, read from its metadata (the fields
    :func:`zoo.detect.files.detect_files` reads from a model's ``config``)."""

    class_names: tuple[str, ...]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    image_size: int
    longest_edge: int
    score_function: str
    top_k: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def read_metadata(path: str | Path, metadata: dict[str, str]) -> OnnxModelInfo:
    """:class:`OnnxModelInfo` of an exported file's ``metadata``.

    Raises:
        ValueError: a file without the zoo's metadata (exported elsewhere, or by an older
            zoo): the message names the missing keys and how to re-export.
    """
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ValueError(
            f"{path}: no zoo metadata ({', '.join(missing)} missing); export it with "
            "`zoo export MODEL model.onnx` to run it with zoo detect"
        )
    score = metadata.get("score_function", "sigmoid")
    if score not in ("sigmoid", "softmax"):
        raise ValueError(f"{path}: score_function must be sigmoid or softmax, got {score!r}")
    return OnnxModelInfo(
        class_names=tuple(json.loads(metadata["class_names"])),
        image_mean=tuple(json.loads(metadata["image_mean"])),
        image_std=tuple(json.loads(metadata["image_std"])),
        image_size=int(metadata["shortest_edge"]),
        longest_edge=int(metadata["longest_edge"]),
        score_function=score,
        top_k=int(metadata.get("top_k", "100")),
    )


class OnnxDetector:
    """An ONNX file with ``predict`` like a zoo model's (CPU, onnxruntime)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.session: Any = load_onnx_session(self.path)
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.config = read_metadata(self.path, dict(metadata))
        self.source = str(self.path)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        threshold: float = 0.5,
        shortest_edge: int | None = None,
        longest_edge: int | None = None,
    ) -> list[Predictions]:
        """Detections per image, as :meth:`zoo.models.pipeline.detector.Detector.predict`
        gives them (``boxes`` xyxy in pixels, ``scores``, ``labels``, ``names``)."""
        check_threshold(threshold)
        shortest, longest = edges_for(self.config, shortest_edge, longest_edge)
        out: list[Predictions] = []
        for image in image_list(images):
            batch = preprocess_for(self.config, [image], shortest, longest)
            logits, boxes = run_onnx(self.session, batch.pixel_values)
            outputs = {"pred_logits": logits, "pred_boxes": boxes}
            if self.config.score_function == "softmax":
                (pred,) = postprocess_softmax(outputs, batch.original_sizes, threshold)
            else:
                (pred,) = postprocess_topk(
                    outputs, batch.original_sizes, threshold, k=self.config.top_k
                )
            pred["names"] = [self.config.class_names[k] for k in pred["labels"].tolist()]
            out.append(pred)
        return out
