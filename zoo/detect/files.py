"""Detection on image files: find them, batch them through a model, write pictures and JSON.

For every input image ``out/<name>.png`` shows the detections and ``out/<name>.json``
lists them (or one ``detections.json`` holds all); with sampling on, Deformable DETR
models also get ``out/<name>_sampling.png``, their decoder's attention per level.

``<name>`` is the input's stem when that is free, so ``photo.jpg`` gives ``photo.png`` and
``photo.json``. The names are collision-free by construction (:func:`unique_stems`): an
input whose outputs would take a name another input's outputs (or an input file in the
output folder) already have keeps its extension (``x.jpg`` beside ``x.png`` gives
``x.jpg.png``, ``x.jpg.json``), then gets a number (``x.png~2`` for a second ``x.png``
from another folder).
"""

from __future__ import annotations

import glob
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

from PIL import Image
from torch import nn

from zoo.detect.drawing import draw_detections, draw_sampling
from zoo.detect.sampling import predict_with_sampling
from zoo.models.config import ModelConfig
from zoo.models.pipeline.coco_names import class_names
from zoo.models.pipeline.images import open_image, to_rgb_image
from zoo.models.pipeline.postprocess import Predictions

logger = logging.getLogger(__name__)

# The shorter side below which zoo detect enlarges its pictures by default (labels stay
# readable on 128-pixel images).
MIN_DRAWN_SIDE = 512
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``inputs``: files, folders (their images, sorted) or globs.

    Raises:
        FileNotFoundError: an input that names no image.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            names = sorted(glob.glob(str(item), recursive=True))
            matches = [Path(n) for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
        if not matches:
            raise FileNotFoundError(f"no image file matches {str(item)!r}")
        found += matches
    return list(dict.fromkeys(found))


def detections_record(
    path: Path, size: tuple[int, int], pred: Predictions, names: Sequence[str]
) -> dict:
    """The JSON of one image: its path, size and every detection (box xyxy in pixels)."""
    return {
        "image": str(path),
        "width": size[0],
        "height": size[1],
        "detections": [
            {
                "label": int(label),
                "name": names[int(label)]
                if 0 <= int(label) < len(names)
                else f"class {int(label)}",
                "score": float(score),
                "box": [float(v) for v in box],
            }
            for box, score, label in zip(
                pred["boxes"].tolist(),
                pred["scores"].tolist(),
                pred["labels"].tolist(),
                strict=True,
            )
        ],
    }


def detect_files(
    model: nn.Module,
    paths: Sequence[Path],
    out_dir: str | Path,
    *,
    threshold: float = 0.5,
    batch_size: int = 4,
    show_sampling: bool = False,
    top_k: int = 5,
    one_json: bool = False,
    progress: bool = True,
    image_size: int | None = None,
    draw_scale: int | None = 1,
) -> list[dict]:
    """Detect objects in ``paths`` and write the pictures and JSON to ``out_dir``.

    Images are resized to the shorter side ``image_size`` (default: the model's
    ``config.image_size``, 800 for the official models). ``draw_scale`` > 1 draws the
    detections on a copy enlarged that many times (nearest neighbour), for pictures too
    small to read; None picks it per image (:func:`drawing_scale`: the shorter side at
    least :data:`MIN_DRAWN_SIDE` pixels). The JSON stays in pixels of the original.

    An image that cannot be read (corrupt, truncated, not an image) is skipped with a
    warning naming it; the others are all processed. With ``one_json`` the file is
    written even when a later image stops the run, with every image finished before.

    Returns:
        The JSON records (see :func:`detections_record`) of the images read, in the
        order of ``paths``; a skipped image has none.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = cast(ModelConfig, model.config)
    names = class_names(config.num_classes, config.class_names)
    stems = unique_stems(paths, out)
    records: list[dict] = []
    bar = tqdm(total=len(paths), unit="image", disable=not progress or len(paths) < 2)
    try:
        for chunk in _chunks(list(zip(paths, stems, strict=True)), batch_size):
            _detect_chunk(
                model,
                chunk,
                out,
                records,
                names,
                threshold,
                show_sampling,
                top_k,
                one_json,
                image_size,
                draw_scale,
            )
            bar.update(len(chunk))
    finally:
        bar.close()
        if one_json:
            (out / "detections.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def read_image(path: Path) -> Image.Image | None:
    """``path`` as an 8-bit RGB image (EXIF rotation applied, 16-bit read by its range),
    or None, with a warning naming it, when it cannot be read."""
    try:
        return to_rgb_image(open_image(path))
    # PIL reports unreadable files as OSError (UnidentifiedImageError, truncated data),
    # ValueError or SyntaxError (broken headers), and oversized ones as DecompressionBombError.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        logger.warning("zoo detect: skipping %s: %s: %s", path, type(e).__name__, e)
        return None


def _detect_chunk(
    model: nn.Module,
    chunk: list[tuple[Path, str]],
    out: Path,
    records: list[dict],
    names: list[str],
    threshold: float,
    show_sampling: bool,
    top_k: int,
    one_json: bool,
    image_size: int | None,
    draw_scale: int | None,
) -> None:
    """Detect, draw and record the images of ``chunk`` that can be read."""
    loaded = [(item, read_image(item[0])) for item in chunk]
    chunk = [item for item, image in loaded if image is not None]
    images = [image for _, image in loaded if image is not None]
    if not images:
        return
    if show_sampling:
        predictions, views = predict_with_sampling(model, images, threshold, top_k, image_size)
    else:
        predictions = model.predict(  # type: ignore[operator]
            images, threshold=threshold, shortest_edge=image_size
        )
    for j, ((path, stem), image, pred) in enumerate(zip(chunk, images, predictions, strict=True)):
        pred = Predictions(
            boxes=pred["boxes"].cpu(), scores=pred["scores"].cpu(), labels=pred["labels"].cpu()
        )
        view = image
        scale = drawing_scale(image.size) if draw_scale is None else draw_scale
        if scale > 1:
            size = (image.width * scale, image.height * scale)
            view = image.resize(size, Image.Resampling.NEAREST)
        boxes = pred["boxes"] * scale
        draw_detections(view, boxes, pred["scores"], pred["labels"], names).save(
            out / f"{stem}.png"
        )
        if show_sampling:
            v = views[j]
            sheet = draw_sampling(image, v.boxes, v.references, v.locations, v.weights, v.strides)
            sheet.save(out / f"{stem}_sampling.png")
        record = detections_record(path, image.size, pred, names)
        records.append(record)
        if not one_json:
            (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")


def drawing_scale(size: tuple[int, int]) -> int:
    """The smallest whole enlargement that gives an image of ``size`` (W, H) a shorter
    side of at least :data:`MIN_DRAWN_SIDE` pixels (1 for larger images)."""
    return max(1, math.ceil(MIN_DRAWN_SIDE / max(1, min(size))))


# What detect_files writes for an input of output name N: N + each suffix.
OUTPUT_SUFFIXES = (".png", ".json", "_sampling.png")


def unique_stems(paths: Sequence[Path], out_dir: str | Path | None = None) -> list[str]:
    """The output name of each input: its stem, else its file name, else the file name
    with ``~2``, ``~3``..., the first whose outputs (:data:`OUTPUT_SUFFIXES`) are all free.

    Free means: no earlier input's outputs have the name, and no input lies there (in
    ``out_dir``), so no two inputs share an output file and no output replaces an input.
    """
    taken: set[str] = set()
    if out_dir is not None:
        folder = Path(out_dir).resolve()
        taken |= {p.name for p in paths if p.resolve().parent == folder}
    names = []
    for path in paths:
        candidates = [path.stem, path.name]
        n = 2
        while not any(_free(c, taken) for c in candidates):
            candidates.append(f"{path.name}~{n}")
            n += 1
        name = next(c for c in candidates if _free(c, taken))
        taken |= {name + suffix for suffix in OUTPUT_SUFFIXES}
        names.append(name)
    return names


def _free(name: str, taken: set[str]) -> bool:
    return bool(name) and not any(name + suffix in taken for suffix in OUTPUT_SUFFIXES)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
