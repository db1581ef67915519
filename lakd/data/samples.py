"""One sample as read from a shard: its members, its valid label values, and its name in warnings.

Label values are validated here, once per sample on the host side of the loaders (`check_label_values`), so
the training step never checks them (on a GPU each check would be a host synchronisation).
"""
from __future__ import annotations

import json

from lakd.data.transforms import CorruptSample

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
LABEL_FIELD = "label.png"


def sample_fields(sample: dict, meta: bool = True) -> tuple[bytes, bytes, dict]:
    """(image bytes, label bytes, parsed json member or {}) of a sample; CorruptSample if a member is missing."""
    img = next((sample[f] for f in IMAGE_FIELDS if f in sample), None)
    if img is None:
        raise CorruptSample("no image member")
    lab = sample.get(LABEL_FIELD)
    if lab is None:
        raise CorruptSample("no label.png member")
    out = {}
    if meta and "json" in sample:
        try:
            out = json.loads(sample["json"])
        except Exception:
            out = {}
    return img, lab, out


def check_label_values(label, num_classes: int, ignore_index: int) -> None:
    """CorruptSample naming the label values that are neither a class id in [0, num_classes) nor
    `ignore_index`. `label` is a decoded 8-bit label image: one C pass over its pixels (PIL's histogram)."""
    hist = label.histogram()
    bad = [v for v in range(num_classes, len(hist)) if hist[v] and v != ignore_index]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CorruptSample(f"label value(s) {shown} ({sum(hist[v] for v in bad)} pixels) are neither a class id "
                            f"in [0, {num_classes}) nor the ignore index {ignore_index}")


def describe(sample: dict) -> str:
    """`shard:key` of a sample read by `lakd.data.shards`."""
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
