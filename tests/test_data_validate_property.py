"""Property tests of the dataset validator on mutated COCO files: whatever the mutation, it
returns a report (never raises), and each injected problem is in it with its id; a
dataset it passes loads sample by sample."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.data import CocoDetection
from zoo.data.validate import DatasetError, check_splits, validate_coco

W, H = 32, 24  # every image's size
NUM_IMAGES = 6
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
Expected = set[tuple[str, str]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    for i in range(1, NUM_IMAGES + 1):
        Image.new("RGB", (W, H), (i * 30, 0, 0)).save(root / f"{i}.png")
    good = (root / "1.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "text.png").write_text("not an image")
    return root


def _base() -> dict[str, Any]:
    images = [
        {"id": i, "file_name": f"{i}.png", "width": W, "height": H}
        for i in range(1, NUM_IMAGES + 1)
    ]
    annotations = [
        {
            "id": 10 * i + j,
            "image_id": i,
            "category_id": 1 + (i + j) % 3,
            "bbox": [2.0 + j, 3.0, 10.0, 8.0],
            "area": 80.0,
            "iscrowd": 0,
        }
        for i in range(1, NUM_IMAGES + 1)
        for j in range(2)
    ]
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write(folder: Path, coco: Any, name: str = "ann.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(coco) if not isinstance(coco, str) else coco)
    return path


# ---------------------------------------------------------------- mutations
# Each draws its parameters and returns (apply(coco, index) -> expected problems).
# Images 2-3 take image mutations, the annotations of images 4-6 take annotation
# mutations, image 1 and its annotations stay untouched (the duplicates copy their ids).
Mutation = Callable[[dict[str, Any], int], Expected]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-5, 5), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _set(key: str, value: Any, kind: str, where: str = "id") -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        entry = coco["images" if kind == "image" else "annotations"][i]
        label = f"{kind} {entry['id']}" if where == "id" else f"{kind}s[{i}]"
        entry[key] = value
        return {(problem_of[(kind, key)], label)}

    problem_of = {
        ("image", "file_name"): "bad-image",
        ("image", "width"): "bad-image",
        ("image", "height"): "bad-image",
        ("image", "id"): "bad-image",
        ("annotation", "category_id"): "unknown-category",
        ("annotation", "image_id"): "unknown-image",
        ("annotation", "bbox"): "bad-annotation",
        ("annotation", "iscrowd"): "bad-annotation",
        ("annotation", "id"): "bad-annotation",
    }
    return apply


def _drop(key: str, kind: str, problem: str, where: str = "id") -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        entry = coco["images" if kind == "image" else "annotations"][i]
        label = f"{kind} {entry['id']}" if where == "id" else f"{kind}s[{i}]"
        del entry[key]
        return {(problem, label)}

    return apply


def _replace_entry(kind: str, value: Any) -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        coco[f"{kind}s"][i] = value
        return {(f"bad-{kind}", f"{kind}s[{i}]")}

    return apply


def _image_file(name: str, problem: str) -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        coco["images"][i]["file_name"] = name
        return {(problem, f"image {coco['images'][i]['id']}")}

    return apply


def _duplicate(kind: str) -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        first = coco[f"{kind}s"][0]["id"]
        coco[f"{kind}s"][i]["id"] = first
        return {("duplicate-id", f"{kind} {first}")}

    return apply


def _box(box: list[float], fix: str | None, area: Any = 80.0) -> Mutation:
    def apply(coco: dict[str, Any], i: int) -> Expected:
        ann = coco["annotations"][i]
        ann["bbox"], ann["area"] = box, area
        where = f"annotation {ann['id']}"
        found = {(fix, where)} if fix else set()
        if fix in (None, "clipped box") and not (
            isinstance(area, float) and math.isfinite(area) and area > 0
        ):
            found.add(("set area", where))
        return found

    return apply


def _size_mismatch(coco: dict[str, Any], i: int) -> Expected:
    coco["images"][i]["height"] = H + 1  # the file is H high
    return {("size-mismatch", f"image {coco['images'][i]['id']}")}


NOT_INT = st.one_of(
    st.none(), st.text(max_size=4), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)
)
NOT_POSITIVE_INT = st.one_of(NOT_INT, st.integers(-(2**40), 0))
UNKNOWN_ID = st.one_of(NOT_INT, st.integers(100, 2**40), st.integers(-(2**40), 0))
NOT_A_BOX = st.one_of(
    JUNK.filter(lambda v: not isinstance(v, list)),
    st.lists(st.floats(0, 5), max_size=6).filter(lambda v: len(v) != 4),
    st.tuples(
        st.floats(0, 5),
        st.floats(0, 5),
        st.floats(0, 5),
        NOT_INT.filter(lambda v: not (isinstance(v, float) and not isinstance(v, bool))),
    ).map(list),
)
COORD = st.floats(0, 10)
SIDE = st.floats(1, 10)
BAD_AREA = st.one_of(st.none(), st.just(float("nan")), st.floats(-100, 0), st.text(max_size=3))

IMAGE_MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(_set, st.just("id"), NOT_INT, st.just("image"), st.just("index")),
    st.just(_drop("id", "image", "bad-image", "index")),
    st.just(_duplicate("image")),
    st.builds(_set, st.sampled_from(["width", "height"]), NOT_POSITIVE_INT, st.just("image")),
    st.builds(
        _set,
        st.just("file_name"),
        st.one_of(NOT_INT.filter(lambda v: not isinstance(v, str)), st.just("")),
        st.just("image"),
    ),
    st.just(_drop("file_name", "image", "bad-image")),
    st.builds(
        _image_file,
        st.text("abc", min_size=1, max_size=5).map(lambda s: f"no-{s}.png"),
        st.just("missing-file"),
    ),
    st.builds(_image_file, st.sampled_from(["broken.png", "text.png"]), st.just("unreadable-file")),
    st.just(_size_mismatch),
    st.builds(_replace_entry, st.just("image"), JUNK.filter(lambda v: not isinstance(v, dict))),
)


ANNOTATION_MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(_set, st.just("category_id"), UNKNOWN_ID, st.just("annotation")),
    st.just(_drop("category_id", "annotation", "unknown-category")),
    st.builds(_set, st.just("image_id"), UNKNOWN_ID, st.just("annotation")),
    st.just(_drop("image_id", "annotation", "unknown-image")),
    st.builds(_set, st.just("bbox"), NOT_A_BOX, st.just("annotation")),
    st.just(_drop("bbox", "annotation", "bad-annotation")),
    st.builds(
        _set,
        st.just("iscrowd"),
        st.one_of(st.integers(2, 9), st.integers(-9, -1), st.text(max_size=2), st.floats(0.1, 0.9)),
        st.just("annotation"),
    ),
    st.builds(_set, st.just("id"), NOT_INT, st.just("annotation"), st.just("index")),
    st.just(_duplicate("annotation")),
    st.builds(
        _replace_entry, st.just("annotation"), JUNK.filter(lambda v: not isinstance(v, dict))
    ),
    # fixable boxes, each built inside its region of the plane
    st.builds(
        lambda k, v, box: _box(
            [v if j == k else c for j, c in enumerate(box)], "dropped non-finite box"
        ),
        st.integers(0, 3),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.tuples(COORD, COORD, SIDE, SIDE),
    ),
    st.builds(
        lambda x, y, w, h, flip: _box([x, y, h, w] if flip else [x, y, w, h], "dropped empty box"),
        COORD,
        COORD,
        st.floats(-10, 0),
        SIDE,
        st.booleans(),
    ),
    st.builds(
        lambda y, w, h, gap: _box([W + gap, y, w, h], "dropped box outside its image"),
        COORD,
        SIDE,
        SIDE,
        st.floats(0, 50),
    ),
    st.builds(
        lambda x, w, h, gap: _box([x, -h - gap, w, h], "dropped box outside its image"),
        COORD,
        SIDE,
        SIDE,
        st.floats(0, 50),
    ),
    st.builds(
        lambda y, w, h, inside: _box([-w + inside, y, w, h], "clipped box"),
        COORD,
        st.floats(2, 10),
        SIDE,
        st.floats(0.5, 1.5),
    ),
    st.builds(
        lambda x, y, over: _box([x, y, W - x + over, 5.0], "clipped box"),
        COORD,
        COORD,
        st.floats(0.5, 20),
    ),
    st.builds(lambda area: _box([1.0, 1.0, 5.0, 5.0], None, area), BAD_AREA),
)


@SETTINGS
@given(
    images=st.dictionaries(st.sampled_from([1, 2]), IMAGE_MUTATIONS, max_size=2),
    annotations=st.dictionaries(
        st.integers(6, 2 * NUM_IMAGES - 1), ANNOTATION_MUTATIONS, max_size=6
    ),
)
def test_each_injected_problem_is_reported(
    folder: Path, images: dict[int, Mutation], annotations: dict[int, Mutation]
) -> None:
    coco = _base()
    expected_errors: Expected = set()
    expected_fixes: Expected = set()
    for index, mutate in [*images.items(), *annotations.items()]:
        for kind, where in mutate(coco, index):
            fixable = kind in ("set area", "clipped box") or kind.startswith("dropped ")
            (expected_fixes if fixable else expected_errors).add((kind, where))
    report = validate_coco(_write(folder, coco), folder)
    errors = {(p.kind, p.where) for p in report.errors}
    fixes = {(p.kind, p.where) for p in report.fixes}
    assert expected_errors <= errors
    assert expected_fixes <= fixes
    # Nothing reported about what was not touched (image 1 and its annotations) ...
    untouched = {"image 1", "annotation 10", "annotation 11"}
    duplicated = {w for k, w in expected_errors if k == "duplicate-id"}
    assert not {w for _, w in errors | fixes} & (untouched - duplicated)
    # ... and no fix where none was made (errors may follow from others: an image
    # without an id leaves its annotations without an image).
    assert fixes == expected_fixes
    if not images and not annotations:
        assert report.errors == [] and report.fixes == []


TOP_LEVEL: list[tuple[Callable[[Any], Any], tuple[str, str]]] = [
    (lambda c: c.pop("images"), ("missing-key", "images")),
    (lambda c: c.pop("annotations"), ("missing-key", "annotations")),
    (lambda c: c.pop("categories"), ("missing-key", "categories")),
    (lambda c: c.update(images={}), ("missing-key", "images")),
    (lambda c: c.update(categories="cats"), ("missing-key", "categories")),
    (lambda c: c.update(images=[]), ("no-images", "images")),
    (lambda c: c.update(categories=[]), ("no-categories", "categories")),
]


@pytest.mark.parametrize(("change", "expected"), TOP_LEVEL)
def test_top_level_problems(folder: Path, change: Callable[[Any], Any], expected: tuple) -> None:
    coco = _base()
    change(coco)
    report = validate_coco(_write(folder, coco, "top.json"), folder)
    assert expected in {(p.kind, p.where) for p in report.errors}
    with pytest.raises(DatasetError):
        report.raise_for_errors()


@SETTINGS
@given(text=st.one_of(st.text(max_size=30), JUNK.map(json.dumps)))
def test_any_text_is_a_report(folder: Path, text: str) -> None:
    path = _write(folder, text, "text.json")
    report = validate_coco(path, folder)
    assert report.errors  # no text of this size is a dataset
    with pytest.raises(DatasetError):
        check_splits([(folder, path)])


PLACES = ["top", "image", "annotation", "category"]


@pytest.mark.filterwarnings("ignore:.*junk.json.*:UserWarning")  # the fixes' counts
@SETTINGS
@given(
    junk=st.lists(
        st.tuples(st.sampled_from(PLACES), st.integers(0, 20), st.text(max_size=12), JUNK),
        min_size=1,
        max_size=4,
    ),
    keys=st.lists(
        st.sampled_from(
            [
                "id",
                "file_name",
                "width",
                "height",
                "image_id",
                "category_id",
                "bbox",
                "area",
                "iscrowd",
                "name",
                "images",
                "annotations",
                "categories",
            ]
        ),
        min_size=4,
        max_size=4,
    ),
)
def test_junk_never_crashes_and_what_passes_loads(
    folder: Path, junk: list[tuple[str, int, str, Any]], keys: list[str]
) -> None:
    coco = _base()
    for n, (place, index, free_key, value) in enumerate(junk):
        key = keys[n] if index % 2 else free_key  # real field names half the time
        if place == "top":
            coco[key] = copy.deepcopy(value)
        else:
            entries = coco[f"{'categorie' if place == 'category' else place}s"]
            # unless junk replaced the list, or the entry itself (["images"] = [0])
            if isinstance(entries, list) and entries:
                entry = entries[index % len(entries)]
                if isinstance(entry, dict):
                    entry[key] = copy.deepcopy(value)
    path = _write(folder, json.loads(json.dumps(coco)), "junk.json")
    report = validate_coco(path, folder)
    try:
        (dataset,) = check_splits([(folder, path)])
    except DatasetError as e:
        assert [(p.kind, p.where) for p in e.problems] == [
            (p.kind, f"{path.name} {p.where}") for p in report.errors
        ]
        return
    # Passed: every kept box is finite, non-empty and inside its image, its ids known,
    # and every sample loads.
    image_ids = {im["id"] for im in dataset["images"]}
    category_ids = {c["id"] for c in dataset["categories"]}
    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        assert ann["image_id"] in image_ids and ann["category_id"] in category_ids
        assert ann["area"] > 0
    data = CocoDetection(folder, path, lambda im, t: (im, t), dataset=dataset)
    for index in range(len(data)):
        image, target = data.raw_sample(index)
        assert image.shape[-2:] == (H, W)
        assert len(target["labels"]) == len(target["boxes"])
