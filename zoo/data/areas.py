"""Object size buckets for COCO's APs/APm/APl, at COCO's scale or scaled to other images.

No torch here: :mod:`zoo.training.config` checks its thresholds at construction.
"""

from __future__ import annotations

from collections.abc import Sequence

# pycocotools' small/medium and medium/large area thresholds (pixels of area).
COCO_AREA_THRESHOLDS = (32.0**2, 96.0**2)


def check_area_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
    """``(small, medium)`` as floats with 0 < small < medium < inf, else ``ValueError``."""
    values = tuple(thresholds)
    if len(values) != 2:
        raise ValueError(f"area_thresholds must be (small, medium), got {thresholds!r}")
    try:
        small, medium = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"area_thresholds must be two numbers, got {thresholds!r}") from None
    # "not <" also refuses NaN.
    if not 0 < small < medium < float("inf"):
        raise ValueError(
            f"area_thresholds must satisfy 0 < small < medium < inf, got {thresholds!r}"
        )
    return small, medium


# COCO's bucket thresholds (32^2 and 96^2 pixels of area) are for images of up to 640
# pixels on a side; :func:`size_buckets` scales them to other image sizes.
COCO_SIDE = 640


def size_buckets(image_size: int) -> tuple[float, float]:
    """COCO's small/medium and medium/large area thresholds scaled to ``image_size``.

    An object is small below the first (area in pixels, as COCO counts it), large at or
    above the second: 32^2 and 96^2 times ``(image_size / 640)^2``, so an object takes
    the same fraction of the image in its bucket as it does in COCO. At 128 pixels the
    thresholds are 40.96 and 368.64 (a 6.4- and a 19.2-pixel square).
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    ratio = (image_size / COCO_SIDE) ** 2
    small, medium = COCO_AREA_THRESHOLDS
    return small * ratio, medium * ratio


def bucket_counts(areas: list[float], image_size: int) -> dict[str, int]:
    """How many of ``areas`` fall in each of :func:`size_buckets`' small/medium/large."""
    small, medium = size_buckets(image_size)
    counts = {"small": 0, "medium": 0, "large": 0}
    for area in areas:
        counts["small" if area < small else "medium" if area < medium else "large"] += 1
    return counts
