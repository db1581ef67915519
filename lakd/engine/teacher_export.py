"""A teacher as one stage hands it to the next: the model together with the label noiser that makes its label
channels (``TeacherExport``), saved and loaded in one place.

On disk it is a model export (:mod:`lakd.models.export`: ``<p>.safetensors`` + ``<p>.json``) whose JSON carries
``label_channels`` and, for a label-assisted teacher, ``noise``: the noiser's settings as
:meth:`LabelNoiser.to_dict` writes them (older exports hold only code_dim, sigma, fixed_sigma and scale; the
number of classes then comes from the export's ``num_classes``). An image-only model (a baseline exported for
the KD row) is a teacher without a noiser.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from lakd.method.label_noise import LabelNoiser


@dataclass
class TeacherExport:
    model: nn.Module
    noiser: Optional[LabelNoiser] = None  # None: the model takes the image only
    meta: dict = field(default_factory=dict)  # what the export's JSON says besides (dataset, mean, std, step...)

    @property
    def label_channels(self) -> int:
        return self.noiser.code_dim if self.noiser is not None else 0

    def save(self, path_without_suffix: str | os.PathLike, meta: Optional[dict[str, Any]] = None) -> Path:
        """Write the export (atomically); returns the ``.safetensors`` path."""
        from lakd.models.export import save_export

        doc = {**self.meta, **(meta or {}), "label_channels": self.label_channels}
        doc.pop("noise", None)
        if self.noiser is not None:
            doc["noise"] = self.noiser.to_dict()
        st_path, _ = save_export(self.model, path_without_suffix, doc)
        return st_path

    @classmethod
    def load(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
             default_noise: Optional[dict] = None) -> "TeacherExport":
        """Read an export (no pickle), frozen in eval mode; ValueError naming the file when it is unusable.
        ``default_noise``: settings for a label-assisted export written without its own (hand-made files)."""
        from lakd.models.export import load_export

        model, meta = load_export(path, map_location=map_location)
        model.eval().requires_grad_(False)
        return cls(model, noiser_from_meta(meta, path, default_noise), meta)


def noiser_from_meta(meta: dict, path: str | os.PathLike, default_noise: Optional[dict] = None
                     ) -> Optional[LabelNoiser]:
    """The label noiser an export's JSON describes (None for an image-only model); ValueError naming the file.
    Usable on the JSON alone (``read_export_meta``), so input checks can run it before anything is written."""
    from lakd.models.export import export_paths

    k = int(meta.get("label_channels", 0))
    if k <= 0:
        return None
    js = export_paths(path)[1]
    settings = meta.get("noise", meta.get("label_noise"))  # "label_noise": the key of early exports
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"{js}: 'noise' settings must be a mapping, got {type(settings).__name__}")
    if settings is None:
        if default_noise is None:
            raise ValueError(f"{js}: the model takes {k} label channel(s) but the export has no 'noise' settings "
                             f"to make them")
        settings = {**default_noise, "code_dim": k}
    try:
        noiser = LabelNoiser.from_dict(settings, num_classes=meta.get("num_classes"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{js}: 'noise' settings: {exc}") from None
    if noiser.code_dim != k:
        raise ValueError(f"{js}: 'noise' code_dim {noiser.code_dim} but label_channels {k}")
    return noiser
