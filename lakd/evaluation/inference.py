"""Inference modes: whole image, sliding window, multi-scale + horizontal flip.

``predict`` returns class scores FloatTensor[B, C, H, W] at the input resolution (argmax = prediction):

- ``whole``: one forward of the whole image, logits bilinearly upsampled (align_corners=True, as in training)
  to the image size. This is the reference protocol (single scale, native resolution).
- ``slide``: windows of ``crop_size`` every ``stride`` pixels (the last window of a row/column is aligned to
  the border); each window's logits are upsampled to the window, summed into the canvas and divided by the
  number of windows covering each pixel (overlaps averaged). All windows of an image have one size, so they
  run in batches of ``batch_size``. An image smaller than the crop is processed in one window of its own size.
- ``msflip``: for each scale in ``scales`` (and, with ``flip``, also the mirrored image) the image is resized
  (bilinear), predicted with ``whole`` (or ``slide`` when ``crop_size`` is given), and the logits resized back
  and averaged.

Label-assisted models take extra input channels: ``extra_input`` is a tensor [B, k, H, W] or a callable
``image -> tensor``. The channels are resized with *nearest* interpolation (codes must not be blended across
region boundaries), cropped and flipped together with the image.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lakd.components import EVAL_MODES as MODES  # torch-free: the config checks names against them

DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    from lakd.method.objectives import unpack_output

    return unpack_output(model(x))[0].float()


def _forward_whole(model, x: torch.Tensor) -> torch.Tensor:
    out = _logits(model, x)
    return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=True)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of ``crop`` every ``stride`` along ``size``; the last one ends at the border."""
    if crop >= size:
        return [0]
    n = (size - crop + stride - 1) // stride + 1
    return sorted({min(i * stride, size - crop) for i in range(n)})


def _forward_slide(model, x: torch.Tensor, crop_size, stride, batch_size: int) -> torch.Tensor:
    B, _, H, W = x.shape
    ch, cw = _pair(crop_size)
    sh, sw = _pair(stride)
    if sh <= 0 or sw <= 0 or ch <= 0 or cw <= 0:
        raise ValueError(f"crop_size and stride must be positive, got crop {crop_size}, stride {stride}")
    ch, cw = min(ch, H), min(cw, W)
    boxes = [(y, x0) for y in window_starts(H, ch, sh) for x0 in window_starts(W, cw, sw)]
    canvas = None
    count = x.new_zeros(1, 1, H, W)
    for y, x0 in boxes:
        count[..., y:y + ch, x0:x0 + cw] += 1
    # batch the windows of all images: [n_windows * B, ...] in chunks of at most batch_size * B
    per_chunk = max(1, batch_size // max(1, B)) if batch_size else len(boxes)
    for i in range(0, len(boxes), per_chunk):
        chunk = boxes[i:i + per_chunk]
        crops = torch.cat([x[..., y:y + ch, x0:x0 + cw] for y, x0 in chunk], dim=0)
        out = _forward_whole(model, crops)
        if canvas is None:
            canvas = x.new_zeros(B, out.shape[1], H, W, dtype=torch.float32)
        for j, (y, x0) in enumerate(chunk):
            canvas[..., y:y + ch, x0:x0 + cw] += out[j * B:(j + 1) * B]
    return canvas / count


def _resize_input(image: torch.Tensor, extra: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        if extra is not None:
            extra = F.interpolate(extra, size=size, mode="nearest")
    return image if extra is None else torch.cat([image, extra.to(image.dtype)], dim=1)


@torch.no_grad()
def predict(model, image: torch.Tensor, *, mode: str = "whole", crop_size=None, stride=None,
            scales: Sequence[float] | None = None, flip: bool | None = None,
            extra_input: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
            batch_size: int = 8) -> torch.Tensor:
    """Class scores [B, C, H, W] for ``image`` [B, 3, H, W] (see the module docstring for the modes).

    ``crop_size``/``stride``: int or (h, w); ``stride`` defaults to 2/3 of the crop (mmseg's usual ratio).
    ``scales`` defaults to (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and ``flip`` to True in ``msflip`` mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}: expected one of {', '.join(MODES)}")
    if image.dim() != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}")
    extra = extra_input(image) if callable(extra_input) else extra_input
    if extra is not None:
        if extra.dim() != 4 or extra.shape[0] != image.shape[0] or extra.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"extra input {tuple(extra.shape)} does not match image {tuple(image.shape)}")
        extra = extra.to(image.device)
    H, W = image.shape[-2:]
    if mode == "slide" or (mode == "msflip" and crop_size is not None):
        if crop_size is None:
            raise ValueError("slide mode needs crop_size")
        if stride is None:
            stride = tuple(max(1, (2 * c) // 3) for c in _pair(crop_size))

    def base(x: torch.Tensor) -> torch.Tensor:
        if crop_size is not None and mode != "whole":
            return _forward_slide(model, x, crop_size, stride, batch_size)
        return _forward_whole(model, x)

    if mode in ("whole", "slide"):
        use_scales, use_flip = (scales or (1.0,)), bool(flip)
    else:
        use_scales = tuple(scales) if scales else DEFAULT_SCALES
        use_flip = True if flip is None else bool(flip)
    total = None
    n = 0
    for s in use_scales:
        size = (max(1, int(round(H * s))), max(1, int(round(W * s))))
        x = _resize_input(image, extra, size)
        flips = (False, True) if use_flip else (False,)
        for fl in flips:
            out = base(x.flip(-1) if fl else x)
            if fl:
                out = out.flip(-1)
            if tuple(out.shape[-2:]) != (H, W):
                out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=True)
            total = out if total is None else total + out
            n += 1
    return total / n
