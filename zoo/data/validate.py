"""One pass over a COCO-format dataset before training or evaluation starts.

:func:`validate_coco` reads the annotation file and reports every problem with the id
of the image, annotation or category it is in, so that a bad dataset stops a run
before its first step with one message, instead of a ``KeyError`` after an hour.

Errors (the run stops; :meth:`Validation.raise_for_errors`):

- the file is missing, not JSON, or not an object; ``images``, ``annotations`` or
  ``categories`` missing or not lists; no images; no categories;
- an entry that is not an object, an id that is not an integer or is used twice, an
  image without a ``file_name`` or with a non-positive ``width``/``height``, a category
  without a ``name``, an annotation whose ``bbox`` is not four numbers, whose
  ``image_id`` or ``category_id`` is unknown, or whose ``iscrowd`` is not 0 or 1;
- (``check_images``) an image file that is missing, whose header does not open, whose
  data fails PIL's ``verify`` (for PNG: every chunk's CRC; for JPEG: the markers), or
  whose size differs from the annotation's ``width``/``height``. Pixels are not decoded:
  a JPEG cut short inside its entropy-coded data passes.

Fixable (the run goes on, with one warning giving the counts; :meth:`Validation.warn`):

- a box with a NaN or infinite coordinate, a zero or negative width or height, or
  entirely outside its image: dropped;
- a box partly outside its image: clipped to it;
- a missing or invalid ``area``: set to the box's width x height (COCO evaluation needs it).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

# How many problems an error message lists (all of them are in DatasetError.problems).
SHOWN = 20
_KEYS = ("images", "annotations", "categories")
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Problem:
    """One problem: its ``kind``, ``where`` it is (``image 7``, ``annotation 12``,
    ``images[3]`` for an entry without a usable id, or the file), and a ``message``."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class DatasetWarning(UserWarning):
    """Fixes made to a dataset (boxes clipped, areas set...): counts and the first few."""


class DatasetError(ValueError):
    """A dataset with errors; ``problems`` lists all of them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"  {p}" for p in problems[:SHOWN]]
        if len(problems) > SHOWN:
            lines.append(f"  ... and {len(problems) - SHOWN} more")
        super().__init__(
            f"{source}: {len(problems)} problem{'s' * (len(problems) != 1)} "
            "to fix before training or evaluating:\n" + "\n".join(lines)
        )


@dataclass
class Validation:
    """What :func:`validate_coco` found.

    ``dataset`` is the annotation dict with the fixes applied (None when the file could
    not be read as a dataset); ``fixes`` lists each fix, ``errors`` each error.
    """

    source: str
    errors: list[Problem] = field(default_factory=list)
    fixes: list[Problem] = field(default_factory=list)
    dataset: dict[str, Any] | None = None

    def raise_for_errors(self) -> None:
        """Raise :class:`DatasetError` listing every error, if there is any."""
        if self.errors:
            raise DatasetError(self.source, self.errors)

    def warn(self) -> None:
        """One warning with the count of each kind of fix (and the first few ids)."""
        if not self.fixes:
            return
        counts = Counter(p.kind for p in self.fixes)
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        first = "; ".join(str(p) for p in self.fixes[:5])
        warnings.warn(f"{self.source}: {summary} (first: {first})", DatasetWarning, stacklevel=2)


def validate_coco(
    annotation_file: str | Path, images_dir: str | Path | None = None, check_images: bool = True
) -> Validation:
    """Check the COCO annotation file (and, with ``images_dir``, its image files).

    Never raises for a bad dataset: the problems are in the returned :class:`Validation`.
    """
    path = Path(annotation_file)
    report = Validation(str(path))
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        report.errors.append(Problem("unreadable-json", str(path), f"cannot be read: {e}"))
        return report
    if not isinstance(data, dict):
        found = type(data).__name__
        report.errors.append(Problem("unreadable-json", str(path), f"is a {found}, not an object"))
        return report
    for key in _KEYS:
        if not isinstance(data.get(key), list):
            found = "missing" if key not in data else f"a {type(data[key]).__name__}"
            report.errors.append(Problem("missing-key", key, f"must be a list, is {found}"))
    if report.errors:
        return report
    if not data["images"]:
        report.errors.append(Problem("no-images", "images", "is empty: nothing to train on"))
    if not data["categories"]:
        report.errors.append(Problem("no-categories", "categories", "is empty"))
    images = _check_images(data["images"], report)
    categories = _check_categories(data["categories"], report)
    sizes = {i: (im["width"], im["height"]) for i, im in images.items() if _has_size(im)}
    if check_images and images_dir is not None:
        sizes.update(_check_files(Path(images_dir), images, report))
    annotations = _check_annotations(data["annotations"], images, categories, sizes, report)
    # Only the annotations change: they are new objects, the rest is shared.
    report.dataset = {**data, "annotations": annotations}
    return report


def _ids(entries: list[Any], kind: str, report: Validation) -> dict[int, dict[str, Any]]:
    """The entries that are objects with an integer id seen once, by id."""
    seen: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            report.errors.append(
                Problem(f"bad-{kind}", f"{kind}s[{i}]", f"is a {type(entry).__name__}")
            )
            continue
        entry_id: Any = entry.get("id")
        if not _is_int(entry_id):
            report.errors.append(
                Problem(f"bad-{kind}", f"{kind}s[{i}]", f"id must be an integer, is {entry_id!r}")
            )
        elif not _INT64[0] <= entry_id <= _INT64[1]:
            # Ids travel as int64 tensors (the data loader, pycocotools' numpy arrays).
            report.errors.append(
                Problem(
                    f"bad-{kind}",
                    f"{kind}s[{i}]",
                    f"id {entry_id} is outside the int64 range [-2**63, 2**63 - 1]",
                )
            )
        elif entry_id in seen:
            report.errors.append(
                Problem("duplicate-id", f"{kind} {entry_id}", f"id used twice ({kind}s[{i}])")
            )
        else:
            seen[entry_id] = entry
    return seen


def _check_images(entries: list[Any], report: Validation) -> dict[int, dict[str, Any]]:
    images = _ids(entries, "image", report)
    for image_id, image in images.items():
        where = f"image {image_id}"
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            report.errors.append(Problem("bad-image", where, f"file_name is {name!r}"))
        for key in ("width", "height"):
            if key in image and not (_is_int(image[key]) and image[key] > 0):
                report.errors.append(
                    Problem(
                        "bad-image", where, f"{key} must be a positive integer, is {image[key]!r}"
                    )
                )
    return images


def _check_categories(entries: list[Any], report: Validation) -> dict[int, dict[str, Any]]:
    categories = _ids(entries, "category", report)
    for category_id, category in categories.items():
        if not isinstance(category.get("name"), str):
            report.errors.append(
                Problem(
                    "bad-category", f"category {category_id}", f"name is {category.get('name')!r}"
                )
            )
    return categories


def _check_files(
    folder: Path, images: dict[int, dict[str, Any]], report: Validation
) -> dict[int, tuple[int, int]]:
    """Open every image file (header + ``verify``), in threads: the work is mostly I/O.

    Returns the (width, height) of each file that opened."""
    sizes = {}
    named = [(i, im) for i, im in images.items() if isinstance(im.get("file_name"), str)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda item: _open(folder / item[1]["file_name"]), named))
    for (image_id, image), (size, problem) in zip(named, found, strict=True):
        where = f"image {image_id}"
        if problem is not None:
            report.errors.append(Problem(problem[0], where, problem[1]))
            continue
        expected = (image.get("width", size[0]), image.get("height", size[1]))
        if size != expected:
            report.errors.append(
                Problem(
                    "size-mismatch",
                    where,
                    f"{image['file_name']} is {size[0]}x{size[1]} pixels, the annotation says "
                    f"{expected[0]}x{expected[1]}",
                )
            )
        sizes[image_id] = size
    return sizes


def _open(path: Path) -> tuple[tuple[int, int], tuple[str, str] | None]:
    try:
        exists = path.is_file()
    except (OSError, ValueError) as e:  # a name too long, or with a NUL byte
        return (0, 0), ("missing-file", f"{path!r} is not a usable file name ({e})")
    if not exists:
        return (0, 0), ("missing-file", f"{path} does not exist")
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except Exception as e:  # PIL raises many types for damaged files
        return (0, 0), ("unreadable-file", f"{path} is not a readable image ({e})")
    return size, None


def _check_annotations(
    entries: list[Any],
    images: dict[int, dict[str, Any]],
    categories: dict[int, dict[str, Any]],
    sizes: dict[int, tuple[int, int]],
    report: Validation,
) -> list[dict[str, Any]]:
    """The annotations to keep (fixed); records every error and fix in ``report``."""
    kept = []
    for ann_id, ann in _ids(entries, "annotation", report).items():
        where = f"annotation {ann_id}"
        errors = len(report.errors)
        image_id: Any = ann.get("image_id")
        if not _is_int(image_id) or image_id not in images:
            report.errors.append(
                Problem("unknown-image", where, f"image_id {ann.get('image_id')!r} is not an image")
            )
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            known = sorted(categories)
            report.errors.append(
                Problem(
                    "unknown-category",
                    where,
                    f"category_id {ann.get('category_id')!r} is not one of the categories "
                    f"{known[:10]}{' ...' if len(known) > 10 else ''}",
                )
            )
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
            report.errors.append(
                Problem("bad-annotation", where, f"iscrowd must be 0 or 1, is {ann['iscrowd']!r}")
            )
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            report.errors.append(
                Problem("bad-annotation", where, f"bbox must be 4 numbers [x, y, w, h], is {box!r}")
            )
        elif len(report.errors) == errors:
            fixed = _fix_box(ann, sizes.get(image_id), where, report)
            if fixed is not None:
                kept.append(fixed)
    return kept


def _fix_box(
    ann: dict[str, Any], size: tuple[int, int] | None, where: str, report: Validation
) -> dict[str, Any] | None:
    """``ann`` with its box clipped into the image of ``size`` (width, height; None:
    unknown) and its area set, or None to drop it."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.fixes.append(Problem("dropped non-finite box", where, f"bbox {ann['bbox']}"))
        return None
    if w <= 0 or h <= 0:
        report.fixes.append(Problem("dropped empty box", where, f"bbox {ann['bbox']}"))
        return None
    ann = dict(ann)
    if size is not None:
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(size[0])), min(y + h, float(size[1]))
        if x1 <= x0 or y1 <= y0:
            report.fixes.append(
                Problem("dropped box outside its image", where, f"bbox {ann['bbox']}")
            )
            return None
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            report.fixes.append(Problem("clipped box", where, f"bbox {ann['bbox']}"))
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    area: Any = ann.get("area")
    if not (_is_number(area) and math.isfinite(area) and area > 0):
        report.fixes.append(Problem("set area", where, f"area {area!r}"))
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    return ann


def _has_size(image: dict[str, Any]) -> bool:
    return all(_is_int(image.get(k)) and image[k] > 0 for k in ("width", "height"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_splits(
    splits: list[tuple[Path, Path]], check_images: bool = True
) -> list[dict[str, Any]]:
    """Validate each (images folder, annotation file) and stop on errors in any of them.

    Returns:
        Each split's annotation dict with the fixes applied (one warning per split
        gives their counts).

    Raises:
        DatasetError: listing the errors of every split, each prefixed by its file.
    """
    reports = [validate_coco(ann, images, check_images) for images, ann in splits]
    errors = [
        Problem(p.kind, f"{Path(r.source).name} {p.where}", p.message)
        for r in reports
        for p in r.errors
    ]
    if errors:
        raise DatasetError(", ".join(r.source for r in reports if r.errors), errors)
    for report in reports:
        report.warn()
    return [r.dataset for r in reports if r.dataset is not None]
