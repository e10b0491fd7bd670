"""A synthetic COCO-format detection dataset of coloured shapes on cluttered backgrounds.

Every image holds a few annotated shapes (circles, squares, triangles, crosses, stars)
of random sizes, colours and rotations, allowed to overlap, on a background of noise,
random lines and unannotated distractor blobs. A seed fixes everything: the same seed
gives byte-identical annotation files and PNGs, so tests and benchmarks can rebuild a
dataset instead of shipping one.

Layout written (the one :mod:`zoo.cli` reads)::

    OUT/annotations/train.json   OUT/train/000000.png ...
    OUT/annotations/val.json     OUT/val/000000.png ...

Two settings: the default (:class:`ShapesSpec`), objects of 12-45% of the image side, on
which the demo model is trained; and :meth:`ShapesSpec.multi_size`, objects from 4% to 40%
of the side drawn log-uniformly, so that COCO's small, medium and large buckets, scaled to
the image (:func:`zoo.data.areas.size_buckets`), each hold a good share of the objects.

Run ``zoo shapes OUT --num-train 200 --num-val 50 --size 128 --seed 0`` (:mod:`zoo.cli.training`),
``--multi-size`` for the second setting.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross", "star")

# A shape must keep this fraction of its own pixels visible after later shapes are
# drawn over it; otherwise it would be an annotation nobody could detect.
_MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class ShapesSpec:
    """What one split looks like.

    ``min_objects``..``max_objects`` shapes per image, each spanning
    ``min_scale``..``max_scale`` of the image side (its circumscribed circle's diameter),
    drawn uniformly or, with ``log_scale``, log-uniformly (as many objects per octave of
    size); ``num_distractors`` unannotated blobs and ``num_lines`` lines of clutter at most.
    """

    size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_scale: float = 0.12
    max_scale: float = 0.45
    num_distractors: int = 3
    num_lines: int = 4
    noise: float = 12.0
    log_scale: bool = False

    @classmethod
    def multi_size(cls, size: int = 128) -> ShapesSpec:
        """Objects from small to large in COCO's buckets scaled to ``size``.

        Diameters from 4% to 40% of the side, log-uniform, 2 to 8 per image. At 128
        pixels about a fifth of the annotated objects are small, half medium and the
        rest large (``tests/test_data_shapes.py`` checks the shares).
        """
        return cls(
            size=size, min_objects=2, max_objects=8, min_scale=0.04, max_scale=0.4, log_scale=True
        )

    def __post_init__(self) -> None:
        if self.size < 1 or not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"ShapesSpec needs size >= 1 and 1 <= min_objects <= max_objects, got size "
                f"{self.size}, min_objects {self.min_objects}, max_objects {self.max_objects}"
            )
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(
                f"ShapesSpec needs 0 < min_scale <= max_scale <= 1, got {self.min_scale}, "
                f"{self.max_scale}"
            )


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius ``r`` centred at (cx, cy), rotated by ``angle``."""
    if kind == "square":
        radii, corners = [r] * 4, 4
    elif kind == "triangle":
        radii, corners = [r] * 3, 3
    elif kind == "star":
        radii, corners = [r, r * 0.45] * 5, 10
    elif kind == "cross":
        # A plus sign: 12 vertices on arms of half-width r/3.
        a = r / 3
        pts = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r)]
        pts += [(-x, -y) for x, y in pts]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in pts]
    else:
        raise ValueError(f"not a polygon: {kind!r}")
    step = 2 * math.pi / corners
    return [
        (cx + rad * math.cos(angle + i * step), cy + rad * math.sin(angle + i * step))
        for i, rad in enumerate(radii)
    ]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, geometry: tuple, fill: Any) -> None:
    cx, cy, r, angle = geometry
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=fill)


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    r, g, b = rng.integers(low, high, size=3)
    return int(r), int(g), int(b)


def _background(rng: np.random.Generator, spec: ShapesSpec) -> Image.Image:
    """A flat colour with Gaussian noise, then random lines and unannotated blobs."""
    base = np.array(_colour(rng, 40, 216), dtype=np.float64)
    noise = rng.normal(0.0, spec.noise, size=(spec.size, spec.size, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    s = spec.size
    for _ in range(int(rng.integers(0, spec.num_lines + 1))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, s, size=4))
        draw.line([x0, y0, x1, y1], fill=_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, spec.num_distractors + 1))):
        # Irregular blobs: ellipses with unequal axes, smaller than the objects.
        cx, cy = (float(v) for v in rng.uniform(0, s, size=2))
        rx, ry = (float(v) for v in rng.uniform(0.02 * s, 0.08 * s, size=2))
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_colour(rng))
    return image


def render_image(
    rng: np.random.Generator, spec: ShapesSpec
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image and its objects: ``category`` (index into CLASSES), ``bbox`` (x, y, w, h)
    in pixels around the visible pixels, ``area`` (visible pixel count)."""
    image = _background(rng, spec)
    draw = ImageDraw.Draw(image)
    s = spec.size
    # owner[y, x] is the index of the shape on top at that pixel (-1: background).
    owner = np.full((s, s), -1, dtype=np.int64)
    own_area: list[int] = []
    kinds: list[int] = []
    for i in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        kind = int(rng.integers(len(CLASSES)))
        if spec.log_scale:
            scale = math.exp(rng.uniform(math.log(spec.min_scale), math.log(spec.max_scale)))
        else:
            scale = rng.uniform(spec.min_scale, spec.max_scale)
        r = float(scale) * s / 2
        cx, cy = (float(v) for v in rng.uniform(r * 0.5, s - r * 0.5, size=2))
        geometry = (cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        mask_image = Image.new("L", (s, s), 0)
        _draw_shape(ImageDraw.Draw(mask_image), CLASSES[kind], geometry, 255)
        mask = np.asarray(mask_image) > 0
        _draw_shape(draw, CLASSES[kind], geometry, _colour(rng))
        owner[mask] = i
        own_area.append(int(mask.sum()))
        kinds.append(kind)
    objects = []
    for i, kind in enumerate(kinds):
        visible = owner == i
        area = int(visible.sum())
        if area == 0 or area < _MIN_VISIBLE * own_area[i]:
            continue
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0
        objects.append({"category": kind, "bbox": [x0, y0, w, h], "area": area})
    return image, objects


def write_split(
    out: Path, split: str, num_images: int, seed: int, spec: ShapesSpec
) -> dict[str, Any]:
    """Render ``num_images`` images into ``out/split`` and return the COCO annotation dict."""
    # The split name enters the seed so train and val never share an image.
    rng = np.random.default_rng([seed, sum(split.encode())])
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id in range(1, num_images + 1):
        image, objects = render_image(rng, spec)
        file_name = f"{image_id:06d}.png"
        # Explicit compression settings: PNG bytes then depend on the pixels only.
        image.save(folder / file_name, format="PNG", compress_level=6, optimize=False)
        images.append(
            {"id": image_id, "file_name": file_name, "width": spec.size, "height": spec.size}
        )
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def generate(
    out: str | Path,
    num_train: int,
    num_val: int,
    size: int = 128,
    seed: int = 0,
    spec: ShapesSpec | None = None,
) -> Path:
    """Write a train and a val split in COCO layout under ``out``; returns ``out``."""
    for name, count in (("num_train", num_train), ("num_val", num_val), ("seed", seed)):
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
    out = Path(out)
    spec = spec or ShapesSpec(size=size)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        coco = write_split(out, split, count, seed, spec)
        text = json.dumps(coco, indent=None, separators=(",", ":"), sort_keys=True)
        (out / "annotations" / f"{split}.json").write_text(text)
    return out
