"""Predictions of the finished models on a few validation images, for the report's example grid.

Each model is loaded from its stage's export (`lakd.models.export.load_export`); the label-assisted teacher
gets the ground truth through the fixed class code (its privileged input at distillation time, built by
`lakd.evaluation.evaluate.label_input_fn(noiser, "fixed")` as in its evaluation), with the noise settings its
stage was trained with (`noise` of the export meta, else of the stage's config.yaml). That exact input is kept
(first channel) so the grid can show what the teacher saw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lakd.report.results import STUDENT_ROLES, StageResult

# (column title, role, label input for label-assisted models); label-assisted teachers get one column per
# variant (dual path / single path)
DEFAULT_COLUMNS = (
    ("LA teacher, with label", "teacher_label", "fixed"),
    ("Teacher, image only", "teacher_image", None),
    ("Baseline", "baseline", None),
    ("Fine-tuned baseline", "finetune", None),
    ("KD", "kd", None),
    ("LAD", "lad", None),
)


def _noiser(r: StageResult, meta: dict):
    """The label noiser of a label-assisted model (:class:`lakd.engine.teacher_export.TeacherExport`'s reading of
    its export meta); an export written without noise settings gets those of its stage's config.yaml."""
    from lakd.engine.teacher_export import noiser_from_meta

    noise = r.files.read_config().get("noise")
    keys = ("code_dim", "sigma", "fixed_sigma", "scale")
    default = {k: noise[k] for k in keys if k in noise} if isinstance(noise, dict) else {}
    return noiser_from_meta(meta, r.export_path(), default_noise=default)


def _lowest_seed(cands: Sequence[StageResult]) -> StageResult | None:
    return min(cands, key=lambda r: (r.seed is None, r.seed or 0, r.run_name), default=None)


def _picks(results: Sequence[StageResult], title: str, role: str, student_arch: str | None
           ) -> list[tuple[str, StageResult]]:
    """The run(s) shown for a column: same student architecture where it applies, lowest seed first; one per
    variant for label-assisted teachers (titled with the variant when there are several)."""
    cands = [r for r in results if r.has_role(role) and r.export_path() is not None]
    if student_arch and role in STUDENT_ROLES:
        cands = [r for r in cands if r.arch == student_arch] or cands
    if role != "teacher_label":
        r = _lowest_seed(cands)
        return [] if r is None else [(title, r)]
    variants = {}
    for r in cands:
        variants.setdefault(r.dual_path, []).append(r)
    out = []
    for dual, runs in sorted(variants.items(), key=lambda kv: kv[0] is not True):  # the paper's first
        name = title if len(variants) == 1 else title.replace(
            "LA teacher", {True: "LA teacher (dual path)", False: "LA teacher (single path)"}.get(dual, "LA teacher"))
        out.append((name, _lowest_seed(runs)))
    return out


@torch.no_grad()
def predict_examples(results: Sequence[StageResult], val_manifest: str | Path, *, num_examples: int = 4,
                     columns: Sequence[tuple[str, str, str | None]] = DEFAULT_COLUMNS,
                     student_arch: str | None = None, device: str | torch.device = "cpu") -> dict:
    """`{"dataset", "class_names", "columns", "examples", "label_input_range", "caption"}` for
    `write_report(examples=...)`.

    Uses the first `num_examples` validation images that hold at least two classes (so there is something to
    segment). Columns whose role has no finished run with an export are left out."""
    from lakd.data.cards import get_card
    from lakd.data.pipeline import build_eval_loader
    from lakd.evaluation.evaluate import label_input_fn
    from lakd.evaluation.inference import predict
    from lakd.method.label_noise import fixed_codes
    from lakd.models.export import load_export

    models, code_range = [], None
    for column, role, label_mode in columns:
        for title, r in _picks(results, column, role, student_arch):
            model, meta = load_export(r.export_path(), map_location=device)
            input_fn = None
            if int(meta.get("label_channels", 0)) > 0:
                noiser = _noiser(r, meta)
                input_fn = label_input_fn(noiser, label_mode or "zeros")
                if label_mode == "fixed" and code_range is None:  # black..white = the fixed code's range
                    codes = fixed_codes(noiser.slots, noiser.code_dim)[:, 0]
                    code_range = (noiser.scale * float(codes.min()), noiser.scale * float(codes.max()))
            models.append((title, r, model, meta, input_fn))
    if not models:
        return {"examples": []}
    meta0 = models[0][3]
    mean = np.asarray(meta0["mean"], dtype=np.float32)
    std = np.asarray(meta0["std"], dtype=np.float32)
    card = get_card(meta0["dataset"])

    examples = []
    for sample in build_eval_loader(val_manifest, mean=meta0["mean"], std=meta0["std"]):
        label = sample["label"].to(device).long()
        if len(torch.unique(label[label != card.ignore_index])) < 2:
            continue
        preds, shown_input = {}, None
        for title, r, model, meta, input_fn in models:
            image = sample["image"].to(device).float()
            if list(meta["mean"]) != list(meta0["mean"]) or list(meta["std"]) != list(meta0["std"]):
                raw = image * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
                image = (raw - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
            extra = input_fn(image, label) if input_fn is not None else None
            if extra is not None and shown_input is None and extra.abs().sum() > 0:
                shown_input = extra[0, 0].float().cpu().numpy()  # the first label-assisted teacher's input
            preds[title] = predict(model, image, mode="whole", extra_input=extra).argmax(1)[0].cpu().numpy()
        img = sample["image"][0].permute(1, 2, 0).cpu().numpy() * std + mean
        examples.append({"image": np.clip(img, 0, 255).astype(np.uint8), "label": label[0].cpu().numpy(),
                         "preds": preds, "label_input": shown_input, "key": sample.get("key", [None])[0]})
        if len(examples) >= num_examples:
            break
    used = ", ".join(f"{title}: `{r.run_name}`" for title, r, *_ in models)
    return {"dataset": meta0["dataset"], "class_names": list(card.class_names), "examples": examples,
            "label_input_range": code_range,
            "columns": [m[0] for m in models],
            "caption": f"Models shown (lowest seed): {used}. The LA teacher is fed the ground truth through "
                       f"the fixed class code (the grey map: its first label channel as fed, pixel noise "
                       f"included, black to white over the code's range); every other model sees the image only."}
