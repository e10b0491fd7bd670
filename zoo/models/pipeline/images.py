"""Any image a user holds to a (3, H, W) float tensor in [0, 1], by the image's real range.

Accepted (see :func:`image_to_tensor`): PIL images of every mode (16-bit ``I;16`` and
32-bit ``I`` as 16-bit data, float ``F`` in [0, 1], palettes, CMYK; transparency
composited onto white, as transformers' ``convert_to_rgb`` does), file paths, numpy
arrays (H, W) or (H, W, C) and tensors (C, H, W) or (H, W) with C in 1, 3 (or 4 for
arrays: RGBA). Integer pixels are scaled by their type's range (uint8 by 255, uint16 by
65535); float pixels must already be in [0, 1]. Anything else is refused with a
``TypeError`` or ``ValueError`` naming the argument, never read wrongly in silence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

# Float images a user resampled (bicubic, Lanczos) overshoot [0, 1] a little; pixels in
# 0-255 do not hide inside this margin.
FLOAT_TOLERANCE = 0.05
# Scale of integer pixels, by dtype; signed types are ambiguous (0-255? 0-65535?).
_INT_RANGES = {torch.uint8: 255.0, torch.uint16: 65535.0}
_PIL_16_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def image_to_tensor(image: Any, name: str = "image") -> Tensor:
    """A (3, H, W) float32 tensor in [0, 1] (on the input tensor's device) from any image.

    Args:
        image: a PIL image, a path (``str`` or ``Path``) to an image file, a numpy array
            (H, W) or (H, W, C) with C in (1, 3, 4), RGB(A) order, or a tensor (C, H, W) or
            (H, W) with C in (1, 3). uint8 pixels are read as 0-255, uint16 as
            0-65535, float pixels must lie in [0, 1] (NaN and inf refused).
        name: how error messages call the argument (``images[2]``...).

    Raises:
        TypeError: not an image, or a pixel type with no defined range (signed ints, bool).
        ValueError: a shape that is no image, an empty image, float pixels outside [0, 1].
        FileNotFoundError, PIL.UnidentifiedImageError: a path that is no readable image.
    """
    if isinstance(image, str | Path):
        if not str(image):
            raise ValueError(f"{name}: an empty string names no image file")
        return pil_to_tensor(open_image(image), f"{name} ({image})")
    if isinstance(image, Image.Image):
        return pil_to_tensor(image, name)
    if isinstance(image, np.ndarray):
        if not image.dtype.isnative:
            image = image.astype(image.dtype.newbyteorder("="))
        if image.dtype.kind not in "biuf":
            raise TypeError(f"{name}: a numpy image of dtype {image.dtype} is no image")
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
            chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        elif image.ndim == 2:
            chw = torch.from_numpy(np.ascontiguousarray(image))[None]
        else:
            raise ValueError(
                f"{name}: a numpy image must be (H, W) or (H, W, C) with C in 1, 3, 4 "
                f"(channels last, as PIL and OpenCV give), got shape {image.shape}; for a "
                "(C, H, W) array pass torch.from_numpy(array)"
            )
        if chw.shape[0] == 4:
            return _composite_on_white(_scaled(chw, name))
        return _rgb(_scaled(chw, name))
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"{name}: a tensor image must be (3, H, W), (1, H, W) or (H, W), "
                f"got shape {tuple(image.shape)}"
            )
        return _rgb(_scaled(image, name))
    raise TypeError(
        f"{name}: expected a PIL image, a path, a numpy array or a tensor, "
        f"got {type(image).__name__}"
    )


def open_image(path: str | Path, *, exif_rotate: bool = True) -> Image.Image:
    """The image file at ``path``, fully read, in its own mode (convert with
    :func:`pil_to_tensor` or :func:`to_rgb_image`), turned upright by its EXIF orientation
    unless ``exif_rotate`` is False (COCO's boxes are drawn on the stored pixel grid).

    Raises:
        OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError: a file PIL
            cannot read (missing, truncated, a broken header, oversized).
    """
    with Image.open(path) as opened:
        opened.load()
        return ImageOps.exif_transpose(opened) if exif_rotate else opened.copy()


def pil_to_tensor(image: Image.Image, name: str = "image") -> Tensor:
    """A (3, H, W) float32 tensor in [0, 1] from a PIL image of any mode (see the module)."""
    mode = image.mode
    if mode in _PIL_16_BIT:
        pixels = np.asarray(image).astype(np.int64)
        # np.min/np.max, not the methods: numpy 2.5's stubs (Python 3.12+) reject
        # pixels.min() on an array of unknown shape.
        low, high = (int(np.min(pixels)), int(np.max(pixels))) if pixels.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"{name}: a mode {mode!r} image is read as 16-bit data (0-65535); its "
                f"pixels span {low}..{high}"
            )
        return _rgb(torch.from_numpy(pixels / 65535.0).float()[None], name)
    if mode == "F":
        return _rgb(_scaled(torch.from_numpy(np.asarray(image).copy())[None], name))
    has_alpha = "A" in image.getbands() or "a" in image.getbands()
    if has_alpha or image.info.get("transparency") is not None:
        # PIL has no direct La (premultiplied) -> RGBA conversion.
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        tensor = torch.from_numpy(np.asarray(rgba).copy()).permute(2, 0, 1)
        return _composite_on_white(_scaled(tensor, name))
    try:
        rgb = image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"{name}: PIL mode {mode!r} cannot be read as RGB ({e})") from e
    return _scaled(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1), name)


def to_rgb_image(image: Image.Image) -> Image.Image:
    """An 8-bit RGB PIL image of ``image`` read by its real range (for drawing on)."""
    if image.mode == "RGB":
        return image
    tensor = pil_to_tensor(image)
    return Image.fromarray((tensor * 255).round().byte().permute(1, 2, 0).numpy())


def _scaled(pixels: Tensor, name: str) -> Tensor:
    """Float pixels in [0, 1] from uint8/uint16/float pixels (C, H, W)."""
    if pixels.shape[-1] == 0 or pixels.shape[-2] == 0:
        raise ValueError(f"{name}: the image is empty (shape {tuple(pixels.shape)})")
    if pixels.dtype in _INT_RANGES:
        return pixels.float() / _INT_RANGES[pixels.dtype]
    if not pixels.is_floating_point():
        raise TypeError(
            f"{name}: pixels of dtype {pixels.dtype} have no defined range; pass uint8 "
            "(0-255), uint16 (0-65535) or float in [0, 1]"
        )
    low, high = torch.aminmax(pixels.detach())
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))) or (
        low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE
    ):
        hint = " (divide 0-255 pixels by 255)" if high > 1 + FLOAT_TOLERANCE else ""
        raise ValueError(
            f"{name}: float pixels must lie in [0, 1], got values in "
            f"[{float(low):g}, {float(high):g}]{hint}"
        )
    # float64 stays float64 (a float64 model keeps its precision); halves widen.
    return pixels if pixels.dtype in (torch.float32, torch.float64) else pixels.float()


def _rgb(pixels: Tensor, name: str = "image") -> Tensor:
    """(3, H, W) from (1, H, W) (grey replicated) or (3, H, W)."""
    if pixels.shape[-1] == 0 or pixels.shape[-2] == 0:
        raise ValueError(f"{name}: the image is empty (shape {tuple(pixels.shape)})")
    return pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels


def _composite_on_white(rgba: Tensor) -> Tensor:
    """(3, H, W) RGB of (4, H, W) RGBA in [0, 1], transparency shown as white."""
    alpha = rgba[3:]
    return rgba[:3] * alpha + (1 - alpha)
