"""Dataset-level segmentation metrics from a confusion matrix accumulated on device.

``ConfusionMatrix.mat[g, p]`` counts the pixels of ground-truth class g predicted as p (int64, on the device
of the predictions; ignore pixels are skipped). Matrices of different ranks are summed (``all_reduce`` or
``merge``); every metric is a function of the summed matrix, so per-rank accumulation + sum equals one pass
over the whole set.

Metrics (``compute()``):

- ``iou[c]`` = TP / (TP + FP + FN), dataset level (intersections and unions summed over all images first);
  ``None`` for a class that occurs neither in the ground truth nor in the predictions of the whole set.
- ``miou``: mean IoU over the classes *present*, i.e. that occur in the ground truth or in the predictions
  (the mmseg convention; absent classes are left out instead of counting as 0).
- ``miou_all``: mean over *all* classes with absent ones counted as 0: the convention of the reference code
  (CIRKD/LAD ``IoU = inter / (union + eps)``). The two differ only when a class is absent from the whole set
  (e.g. COCO-Stuff's 182-id layout, where 11 ids never occur); both are reported.
- ``acc``: pixel accuracy over non-ignored pixels; ``macc``: mean over classes present in the ground truth
  of the per-class recall TP / (TP + FN); ``class_acc[c]`` (None for classes absent from the ground truth).
- ``fwiou``: frequency-weighted IoU; ``pixels``: labelled pixels counted; ``present``: the present classes;
  ``gt_fraction`` / ``pred_fraction``: each class's share of the labelled pixels / of the predictions.
"""
from __future__ import annotations

import torch

from lakd import IGNORE_INDEX


class ConfusionMatrix:
    """num_classes x num_classes int64 confusion matrix (rows = ground truth, columns = prediction)."""

    def __init__(self, num_classes: int, device: torch.device | str | None = None,
                 ignore_index: int = IGNORE_INDEX):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.mat = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.mat.device

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: ``pred`` class ids (or logits [N,C,H,W], arg-maxed here) and ``label`` [N,H,W]."""
        if pred.is_floating_point():
            if pred.dim() != label.dim() + 1:
                raise ValueError(f"logits {tuple(pred.shape)} do not match labels {tuple(label.shape)}")
            pred = pred.argmax(1)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        pred = pred.to(self.device, torch.int64).flatten()
        label = label.to(self.device, torch.int64).flatten()
        C = self.num_classes
        bad = ((label < 0) | (label >= C)) & (label != self.ignore_index)
        if bool(bad.any()):
            value = int(label[bad][0])
            raise ValueError(f"label value {value} is out of range: expected class ids 0..{C - 1} "
                             f"or ignore_index {self.ignore_index}")
        valid = label != self.ignore_index
        if bool(((pred[valid] < 0) | (pred[valid] >= C)).any()):
            value = int(pred[valid][(pred[valid] < 0) | (pred[valid] >= C)][0])
            raise ValueError(f"predicted class {value} is out of range 0..{C - 1}")
        idx = label[valid] * C + pred[valid]
        self.mat += torch.bincount(idx, minlength=C * C).view(C, C)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix (e.g. another rank's) into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self.mat += other.mat.to(self.device)
        return self

    def all_reduce(self, group=None) -> "ConfusionMatrix":
        """Sum the matrix over all ranks of the default (or given) process group; no-op when not distributed."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM, group=group)
        return self

    def compute(self) -> dict:
        return metrics_from_confusion(self.mat)


def metrics_from_confusion(mat: torch.Tensor) -> dict:
    """All metrics (see the module docstring) from a [C, C] confusion matrix; plain Python values (JSON-ready)."""
    m = mat.detach().to("cpu", torch.float64)
    C = m.shape[0]
    tp = m.diag()
    gt = m.sum(1)
    pr = m.sum(0)
    union = gt + pr - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.zeros_like(tp))
    total = float(m.sum())
    in_gt = gt > 0
    class_acc = torch.where(in_gt, tp / gt.clamp_min(1), torch.zeros_like(tp))
    n_present = int(present.sum())
    n_gt = int(in_gt.sum())
    return {
        "miou": float(iou[present].sum() / n_present) if n_present else 0.0,
        "miou_all": float(iou.sum() / C),
        "iou": [float(iou[c]) if present[c] else None for c in range(C)],
        "acc": float(tp.sum() / total) if total else 0.0,
        "macc": float(class_acc[in_gt].sum() / n_gt) if n_gt else 0.0,
        "class_acc": [float(class_acc[c]) if in_gt[c] else None for c in range(C)],
        "fwiou": float((gt * iou).sum() / total) if total else 0.0,
        "present": [c for c in range(C) if present[c]],
        "pixels": int(total),
        "num_classes": C,
        # class shares of the labelled pixels and of the predictions: what a model predicting one class
        # everywhere would score, and whether a model does (lakd.report: "learned nothing")
        "gt_fraction": [float(gt[c] / total) if total else 0.0 for c in range(C)],
        "pred_fraction": [float(pr[c] / total) if total else 0.0 for c in range(C)],
    }
