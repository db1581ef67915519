"""Evaluate a model over an eval loader: inference + confusion matrix, all-reduced across ranks.

The eval loader (``lakd.data.pipeline.build_eval_loader``) yields whole images one at a time
(``{"image": [1,3,H,W], "label": [1,H,W], "key": [str]}``), each rank a disjoint part of the set. Consecutive
images of one size are stacked into batches of up to ``batch_size`` before inference.

Label-assisted models need their extra channel(s) at evaluation too: ``input_fn(image, label)`` returns them
([B, k, H, W]; e.g. ``label_input_fn(noiser, "fixed")`` for the privileged evaluation of a teacher or
``"zeros"`` for an evaluation without the label). They are passed to ``predict`` as ``extra_input``, which
resizes them with nearest interpolation and crops/flips them together with the image.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from lakd import IGNORE_INDEX
from lakd.evaluation.inference import predict
from lakd.evaluation.metrics import ConfusionMatrix

LABEL_INPUTS = ("fixed", "zeros", "random")


def label_input_fn(noiser, mode: str, seed: int = 0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``input_fn`` for a label-assisted model: ``mode`` "fixed" (privileged: the fixed code, official
    distillation-time input), "zeros" (no label) or "random" (a training-style random code). The pixel noise
    is drawn from a generator seeded with ``seed`` so an evaluation is reproducible."""
    if mode not in LABEL_INPUTS:
        raise ValueError(f"unknown label input {mode!r}: expected one of {', '.join(LABEL_INPUTS)}")
    state = {}

    def fn(image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if mode == "zeros":
            return noiser.zeros_like_image(image)
        gen = state.get(label.device)
        if gen is None:
            gen = state[label.device] = torch.Generator(device=label.device).manual_seed(seed)
        out = noiser.fixed(label, gen) if mode == "fixed" else noiser.random(label, gen)
        return out.to(image.dtype)

    return fn


def _batches(loader: Iterable[dict], batch_size: int):
    """Stack consecutive samples of one image size into batches of at most ``batch_size``."""
    buf: list[dict] = []

    def flush():
        batch = {"image": torch.cat([b["image"] for b in buf]), "label": torch.cat([b["label"] for b in buf]),
                 "key": [k for b in buf for k in b.get("key", [None] * b["image"].shape[0])]}
        buf.clear()
        return batch

    for sample in loader:
        if buf and (sample["image"].shape[-2:] != buf[0]["image"].shape[-2:]
                    or sum(b["image"].shape[0] for b in buf) + sample["image"].shape[0] > batch_size):
            yield flush()
        buf.append(sample)
    if buf:
        yield flush()


@torch.no_grad()
def evaluate(model, loader: Iterable[dict], num_classes: int, *,
             input_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
             mode: str = "whole", crop_size=None, stride=None, scales=None, flip=None,
             device: torch.device | str | None = None, batch_size: int = 1, ignore_index: int = IGNORE_INDEX,
             on_prediction: Callable[[list, torch.Tensor, torch.Tensor], None] | None = None,
             all_reduce: bool = True, max_images: int | None = None) -> dict:
    """Metrics dict (``lakd.evaluation.metrics``) of ``model`` over ``loader``, summed over all ranks.

    ``on_prediction(keys, pred[B,H,W] (cpu int64), label[B,H,W] (cpu))`` is called for every batch (e.g. to
    write prediction PNGs). The model is put in eval mode and restored to its previous mode afterwards.
    """
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, device=device, ignore_index=ignore_index)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in _batches(loader, max(1, int(batch_size))):
            image = batch["image"].to(device, non_blocking=True).float()
            label = batch["label"].to(device, non_blocking=True).long()
            extra = input_fn(image, label) if input_fn is not None else None
            scores = predict(model, image, mode=mode, crop_size=crop_size, stride=stride, scales=scales,
                             flip=flip, extra_input=extra, batch_size=max(1, int(batch_size)))
            if scores.shape[1] != num_classes:
                raise ValueError(f"model predicts {scores.shape[1]} classes, the data has {num_classes}")
            pred = scores.argmax(1)
            cm.update(pred, label)
            if on_prediction is not None:
                on_prediction(batch["key"], pred.cpu(), label.cpu())
            seen += image.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        model.train(was_training)
    if all_reduce:
        cm.all_reduce()
    return cm.compute()
