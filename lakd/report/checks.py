"""What a model's evaluation says about whether it learned: the score of predicting the most frequent class
everywhere, and whether a model does just that ("learned nothing").

Both read the class shares that every evaluation records (lakd.evaluation.metrics: `gt_fraction`,
`pred_fraction`); an evaluation without them (older result.json files) gives None, never a guess.
"""
from __future__ import annotations

from typing import Sequence

# a model whose predictions are this much one class is said to predict that class everywhere
COLLAPSE_SHARE = 0.98


def majority_score(metrics: dict | None) -> float | None:
    """mIoU (fraction) of predicting the most frequent ground-truth class on every pixel: that class's IoU is its
    pixel share, every other class present in the ground truth scores 0 (mIoU over present classes)."""
    gt = (metrics or {}).get("gt_fraction")
    if not gt:
        return None
    present = [f for f in gt if f and f > 0]
    return max(present) / len(present) if present else None


def collapsed_class(metrics: dict | None, share: float = COLLAPSE_SHARE) -> int | None:
    """The class a model predicts on at least `share` of the pixels, else None (also when unknown)."""
    pred = (metrics or {}).get("pred_fraction")
    if not pred:
        return None
    top = max(range(len(pred)), key=lambda c: pred[c] or 0.0)
    return top if (pred[top] or 0.0) >= share else None


def class_name(c: int, names: Sequence[str] | None) -> str:
    return names[c] if names and 0 <= c < len(names) else f"class {c}"


def learned_nothing(metrics: dict | None, names: Sequence[str] | None = None) -> str | None:
    """'learned nothing (predicts <class> everywhere)' for a collapsed model, else None."""
    c = collapsed_class(metrics)
    return None if c is None else f"learned nothing (predicts {class_name(c, names)} everywhere)"
