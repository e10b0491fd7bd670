"""Pictures of detections: boxes with labelled scores, and deformable sampling points.

Pure drawing on PIL images (no model here): coordinates come in pixels of the image
drawn on. Line widths and text grow with the image so that results stay readable
from thumbnails to large photos.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# Distinct, saturated colours (Tableau 10); a label keeps its colour across images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip

# Attention weight colour scale, low to high (dark blue -> cyan -> yellow -> red).
_HEAT = ((40, 40, 160), (0, 190, 230), (250, 230, 30), (230, 20, 20))


def label_color(label: int) -> tuple[int, int, int]:
    """The box colour of class ``label``."""
    return PALETTE[label % len(PALETTE)]


def heat_color(t: float) -> tuple[int, int, int]:
    """The colour of ``t`` in [0, 1] on the attention scale (clamped)."""
    t = min(max(t, 0.0), 1.0) * (len(_HEAT) - 1)
    i = min(int(t), len(_HEAT) - 2)
    f = t - i
    a, b = _HEAT[i], _HEAT[i + 1]
    return (
        round(a[0] + f * (b[0] - a[0])),
        round(a[1] + f * (b[1] - a[1])),
        round(a[2] + f * (b[2] - a[2])),
    )


def line_width(size: tuple[int, int]) -> int:
    """Box outline width for an image of ``size`` (W, H): ~0.4% of the shorter side."""
    return max(2, round(min(size) / 250))


def _font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(11, round(min(size) / 40)))


def draw_detections(
    image: Image.Image,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    names: Sequence[str],
) -> Image.Image:
    """A copy of ``image`` with every box outlined and tagged "name score".

    Args:
        image: the picture the boxes belong to.
        boxes: (K, 4) as (x0, y0, x1, y1) in pixels of ``image``.
        scores: (K,) in [0, 1]. labels: (K,) indices into ``names``.
        names: class names (see :func:`zoo.models.pipeline.coco_names.class_names`).
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width, font = line_width(out.size), _font(out.size)
    # Lowest scores first, so the most confident boxes and tags end up on top.
    for k in torch.argsort(scores).tolist():
        x0, y0, x1, y1 = boxes[k].tolist()
        label = int(labels[k])
        color = label_color(label)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        name = names[label] if 0 <= label < len(names) else f"class {label}"
        _tag(draw, (x0, y0), f"{name} {float(scores[k]):.2f}", color, font, out.size)
    return out


def _tag(
    draw: ImageDraw.ImageDraw,
    corner: tuple[float, float],
    text: str,
    color: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
) -> None:
    """Text on a filled box at a box's top-left corner: above it, or inside at the top edge."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 5)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = min(max(corner[0], 0), max(size[0] - w, 0))
    y = corner[1] - h if corner[1] - h >= 0 else max(corner[1], 0)
    draw.rectangle((x, y, x + w, y + h), fill=color)
    # White on dark colours, black on light ones (perceived luminance).
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 150 else (255, 255, 255)
    draw.text((x + pad - left, y + pad - top), text, fill=ink, font=font)


def draw_sampling(
    image: Image.Image,
    boxes: Tensor,
    references: Tensor,
    locations: Tensor,
    weights: Tensor,
    strides: Sequence[int] | None = None,
) -> Image.Image:
    """Deformable attention of some queries, one panel per feature level, side by side.

    In each panel (the image, faded) every query's box is outlined, its reference
    point drawn as a ringed cross, and its sampling points on that level as dots
    coloured by attention weight (the query's strongest point is red), as in the
    Deformable DETR paper's visualisations.

    Args:
        image: the picture (pixels as below).
        boxes: (K, 4) xyxy pixels, the queries' predicted boxes.
        references: (K, 2) reference points (x, y) in pixels.
        locations: (K, M, L, P, 2) sampling points (x, y) in pixels, M heads, L levels.
        weights: (K, M, L, P) attention weights.
        strides: each level's stride, for the panel titles.
    """
    base = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, (255, 255, 255)), 0.45)
    num_levels = locations.shape[2]
    radius = max(2, round(min(image.size) / 150))
    font = _font(image.size)
    panels = []
    for level in range(num_levels):
        panel = base.copy()
        draw = ImageDraw.Draw(panel)
        for k in range(locations.shape[0]):
            draw.rectangle(tuple(boxes[k].tolist()), outline=label_color(k), width=2)
            top = float(weights[k].max()) or 1.0
            points = locations[k, :, level].reshape(-1, 2).tolist()
            values = weights[k, :, level].reshape(-1).tolist()
            # Faint points first so that strong ones stay visible where they overlap.
            for (x, y), v in sorted(zip(points, values, strict=True), key=lambda p: p[1]):
                draw.ellipse(
                    (x - radius, y - radius, x + radius, y + radius),
                    fill=heat_color(v / top),
                    outline=(0, 0, 0),
                )
            _reference_mark(draw, references[k].tolist(), 3 * radius)
        title = f"level {level}" + (f" (stride {strides[level]})" if strides else "")
        _tag(draw, (0, 0), title, (40, 40, 40), font, panel.size)
        panels.append(panel)
    sheet = Image.new("RGB", (image.width * num_levels, image.height), (255, 255, 255))
    for level, panel in enumerate(panels):
        sheet.paste(panel, (level * image.width, 0))
    return sheet


def _reference_mark(draw: ImageDraw.ImageDraw, xy: list[float], r: int) -> None:
    x, y = xy
    draw.ellipse((x - r, y - r, x + r, y + r), outline=(0, 0, 0), width=max(2, r // 3))
    draw.line((x - r, y, x + r, y), fill=(0, 200, 0), width=max(2, r // 3))
    draw.line((x, y - r, x, y + r), fill=(0, 200, 0), width=max(2, r // 3))
