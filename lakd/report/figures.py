"""Figures of the report: a bar chart of every role, loss and mIoU curves from metrics.jsonl, and a grid of
example predictions.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot, so nothing
touches a display or global backend state (works on headless machines and inside tests).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lakd import IGNORE_INDEX
from lakd.io import atomic_output
from lakd.report.checks import COLLAPSE_SHARE
from lakd.report.results import StageResult, read_metrics

ROLE_COLORS = {
    "teacher_label": "#d62728",
    "teacher_image": "#7f7f7f",
    "baseline": "#1f77b4",
    "finetune": "#9467bd",
    "kd": "#ff7f0e",
    "lad": "#2ca02c",
}
ROLE_MARKERS = {"teacher_label": "D", "teacher_image": "s", "baseline": "o", "finetune": "v", "kd": "^", "lad": "P"}
SEED_STYLES = ("-", "--", ":", "-.")
BAR_LABELS = {"baseline": "Student,\nbaseline", "finetune": "Student, baseline\nfine-tuned (control)",
              "kd": "Student, KD", "lad": "Student, LAD"}
ALL_BACKGROUND = "all background (most frequent class everywhere)"


def _save(fig: Figure, out_png: str | Path, dpi: int) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return out_png


def _smooth(y: np.ndarray) -> np.ndarray:
    """Centred running mean over ~1/25 of the curve (noisy per-step losses)."""
    k = max(1, len(y) // 25)
    if k == 1:
        return y
    kernel = np.ones(k) / k
    padded = np.pad(y, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _eval_mious(rec: dict) -> dict[str, float]:
    """{'image': miou, 'label': miou} from one evaluation record (nested per input or flat)."""
    ev = rec.get("eval") or {}
    if "miou" in ev:
        return {"image": float(ev["miou"])}
    return {k: float(v["miou"]) for k, v in ev.items() if isinstance(v, dict) and v.get("miou") is not None}


def _color(r: StageResult, role: str) -> str:
    if role == "teacher_label" and r.dual_path is False:
        return "#e377c2"  # the single-path variant apart from the paper's dual-path teacher
    return ROLE_COLORS[role]


def _seed_style(r: StageResult) -> str:
    return SEED_STYLES[(r.seed or 0) % len(SEED_STYLES)]


def _seed_tag(r: StageResult) -> str:
    return "" if r.seed is None else f", seed {r.seed}"


def _finish(ax, title: str, ylabel: str, majority: float | None = None) -> None:
    ax.set_title(title, fontsize=10.5)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if majority is not None and ax.lines:
        ax.axhline(100 * majority, color="black", lw=1.0, ls=(0, (4, 3)), label=ALL_BACKGROUND)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")


LOSS_PANELS = (  # (row, title, term names): CE apart from the teacher-signal terms
    (0, "cross-entropy (CE)", ("ce",)),
    (1, "other terms (KD / consistency)", ("kd", "consistency")),
)


def plot_loss_curves(results: Sequence[StageResult], out_png: str | Path, *, dpi: int = 110) -> Path:
    """2 x 2 panels on linear axes: the CE term (top) and the other loss terms, KD for students and the
    dual-path consistency for teachers (bottom); teachers left, students right. One colour and marker per role,
    one line style per seed; losses smoothed with a short running mean. Each line puts its markers at other
    steps than the lines before it in its panel, so lines that lie on top of each other stay visible."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    series: dict[tuple[int, int], list] = {}
    for r in results:
        steps, _ = read_metrics(r.files)
        if not steps:
            continue
        x = np.array([s["step"] for s in steps], dtype=float)
        for role in r.roles:
            col = 0 if role.startswith("teacher") else 1
            for row, _, names in LOSS_PANELS:
                for name in names:
                    vals = [(s.get("terms") or {}).get(name) for s in steps]
                    if name == "ce" and all(v is None for v in vals):
                        vals = [s.get("loss") for s in steps]  # metrics without terms: the total loss
                    y = np.array([np.nan if v is None else float(v) for v in vals])
                    ok = np.isfinite(y)
                    if ok.any():
                        label = f"{r.title(role)}{_seed_tag(r)}" + ("" if row == 0 else f": {name}")
                        series.setdefault((row, col), []).append((x[ok], _smooth(y[ok]), r, role, label))
    for (row, col), lines in series.items():
        for i, (x, y, r, role, label) in enumerate(lines):
            every = max(1, len(x) // 10)
            axes[row, col].plot(x, y, color=_color(r, role), ls=_seed_style(r), lw=1.3, marker=ROLE_MARKERS[role],
                                ms=4, markevery=((i * every) // len(lines), every), alpha=0.9, label=label)
    for row, term_title, _ in LOSS_PANELS:
        for col, who in enumerate(("Teachers", "Students")):
            _finish(axes[row, col], f"{who}: {term_title}", "loss")
    fig.suptitle("Training loss terms (linear axes; smoothed; line style = seed)", fontsize=12)
    return _save(fig, out_png, dpi)


def plot_miou_curves(results: Sequence[StageResult], out_png: str | Path, *, majority: float | None = None,
                     dpi: int = 110) -> Path:
    """Validation mIoU (%) against the step: teachers (with label solid, zero label dashed; image-only
    teachers) left, students right; the all-background score as a black dashed line. Every series has its own
    marker and is shifted by a small fraction of the evaluation interval along the step axis, so series that
    coincide stay visible."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    series = []
    for r in results:
        _, evals = read_metrics(r.files)
        for role in r.roles:
            col = 0 if role.startswith("teacher") else 1
            for which in (("label", "image") if role == "teacher_label" else ("image",)):
                pts = [(e["step"], _eval_mious(e).get(which)) for e in evals]
                pts = [(s, 100 * v) for s, v in pts if v is not None and math.isfinite(v)]
                if pts:
                    series.append((col, r, role, which, pts))
    for col in (0, 1):
        mine = [s for s in series if s[0] == col]
        steps = sorted({p[0] for s in mine for p in s[4]})
        gap = min(np.diff(steps)) if len(steps) > 1 else 1.0
        for i, (_, r, role, which, pts) in enumerate(mine):
            shift = (i - (len(mine) - 1) / 2) * 0.06 * gap / max(1, len(mine) / 4)
            xs, ys = zip(*pts)
            ls = "--" if role == "teacher_label" and which == "image" else _seed_style(r)
            tag = ("" if role != "teacher_label" else (", with label" if which == "label" else ", zero label"))
            axes[col].plot(np.asarray(xs, dtype=float) + shift, ys, ls=ls, color=_color(r, role),
                           marker=ROLE_MARKERS[role], ms=4, lw=1.3, mfc="white" if which == "image" and
                           role == "teacher_label" else None, label=f"{r.title(role)}{tag}{_seed_tag(r)}")
    _finish(axes[0], "Teachers: validation mIoU", "mIoU (%)", majority)
    _finish(axes[1], "Students: validation mIoU", "mIoU (%)", majority)
    fig.suptitle("Validation mIoU during training (markers shifted slightly along the step axis so that "
                 "equal curves stay visible)", fontsize=11)
    return _save(fig, out_png, dpi)


def plot_role_bars(blocks: Sequence, out_png: str | Path, *, dpi: int = 110) -> Path:
    """One panel per results block (lakd.report.table.Block): a bar per role (teachers with label and with a
    zero label apart), height = mean over seeds, error bar = sample std over seeds, the seeds as dots, and the
    all-background score as a horizontal line. Models that learned nothing are marked under their bar."""
    n = max(1, len(blocks))
    fig = Figure(figsize=(max(7.0, 1.1 * max(len(b.teachers) * 2 + len(b.students) for b in blocks)) if blocks
                          else 7.0, 5.2 * n), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1))
    for ax, b in zip(axes, blocks):
        bars = []  # (label, Stat, colour, hatch, remark)
        for t in b.teachers:
            colour = _color(t.runs[0], t.role)
            if t.role == "teacher_label":
                variant = t.title.replace("Teacher, label-assisted", "LA teacher")
                bars.append((f"{variant},\nwith label", t.with_label, colour, "", t.remark))
                bars.append((f"{variant},\nzero label", t.image, colour, "//", ""))
            else:
                bars.append((f"Image-only teacher\n{t.arch}", t.image, colour, "", t.remark))
        for s in b.students:
            bars.append((BAR_LABELS[s.role], s.stat, ROLE_COLORS[s.role], "", s.remark))
        xs = np.arange(len(bars))
        for x, (label, st, colour, hatch, remark) in zip(xs, bars):
            if not st.n:
                continue
            ax.bar(x, 100 * st.mean, color=colour, alpha=0.75, hatch=hatch, edgecolor="0.2",
                   yerr=100 * st.std if st.n > 1 else None, capsize=4)
            jitter = np.linspace(-0.15, 0.15, st.n) if st.n > 1 else np.zeros(1)
            ax.scatter(x + jitter, [100 * v for v in st.values], s=14, color="black", zorder=3)
            if remark.startswith("learned nothing"):
                top = 100 * (max(st.values) + (st.std if st.n > 1 else 0.0))
                ax.text(x, top + 1.5, "learned\nnothing", ha="center", va="bottom", fontsize=7.5, color="black",
                        fontweight="bold")
        if b.majority is not None:
            ax.axhline(100 * b.majority, color="black", lw=1.0, ls=(0, (4, 3)),
                       label=f"{ALL_BACKGROUND}: {100 * b.majority:.1f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xticks(xs, [x[0] for x in bars], fontsize=7.5, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_ylabel("mIoU (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
        seeds = ", ".join(str(s) for s in b.seeds)
        ax.set_title(f"{b.dataset} / student {b.student}: mean over seeds ({seeds or '-'}), error bar = std, "
                     "dots = single runs", fontsize=10)
    return _save(fig, out_png, dpi)


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = IGNORE_INDEX,
             ignore_color: Sequence[int] | None = None) -> np.ndarray:
    """Map an [H, W] array of train ids to [H, W, 3] uint8 colours; ignore pixels get `ignore_color`
    (white if the palette uses black, else black); ids outside the palette are drawn magenta."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = (255, 0, 255)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(pal)] = pal
    if ignore_color is None:
        ignore_color = (255, 255, 255) if any(tuple(p) == (0, 0, 0) for p in pal.tolist()) else (0, 0, 0)
    if 0 <= ignore_index < 256:
        lut[ignore_index] = ignore_color
    return lut[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def pixel_accuracy(pred: np.ndarray, label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> float:
    valid = label != ignore_index
    return float((pred[valid] == label[valid]).mean()) if valid.any() else math.nan


def plot_example_grid(examples: Sequence[dict], pred_columns: Sequence[str], palette: Sequence[Sequence[int]],
                      class_names: Sequence[str], out_png: str | Path, *, ignore_index: int = IGNORE_INDEX,
                      label_input_title: str = "Teacher's label input\n(fixed code, grey)",
                      label_input_range: tuple[float, float] | None = None, dpi: int = 110) -> Path:
    """One row per example: image | ground truth | [label input] | one column per prediction, coloured with
    `palette`.

    `examples`: dicts with `image` ([H, W, 3] uint8 RGB), `label` ([H, W] train ids), `preds`
    ({column title: [H, W] train ids}) and optionally `label_input` ([H, W] float: the noised label channel
    a label-assisted teacher is fed, drawn as a grey map from black at `label_input_range[0]` to white at
    `[1]`, the code's whole range, or each image's own range without it). Each prediction is captioned
    with its pixel accuracy on that image (and "all <class>" when one class covers 98% of it); a legend of the
    class colours sits under the grid."""
    if not examples:
        raise ValueError("plot_example_grid: no examples")
    with_input = any(ex.get("label_input") is not None for ex in examples)
    titles = ["Image", "Ground truth"] + ([label_input_title] if with_input else []) + list(pred_columns)
    nrow, ncol = len(examples), len(titles)
    h, w = np.asarray(examples[0]["label"]).shape
    cell = 2.2
    fig = Figure(figsize=(cell * ncol * min(max(w / h, 0.5), 2.0), cell * nrow + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(nrow, ncol, squeeze=False))
    for i, ex in enumerate(examples):
        label = np.asarray(ex["label"])
        panels = [np.asarray(ex["image"]), colorize(label, palette, ignore_index)]
        captions = ["", ""]
        if with_input:
            code = ex.get("label_input")
            if code is None:
                panels.append(np.full((*label.shape, 3), 235, dtype=np.uint8))
                captions.append("missing")
            else:
                code = np.asarray(code, dtype=np.float64)
                lo, hi = label_input_range or (float(code.min()), float(code.max()))
                grey = np.clip((code - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(code)
                panels.append(np.repeat((255 * grey).astype(np.uint8)[..., None], 3, axis=2))
                captions.append(f"{lo:.3g} .. {hi:.3g}")
        for col in pred_columns:
            pred = ex["preds"].get(col)
            if pred is None:
                panels.append(np.full((*label.shape, 3), 235, dtype=np.uint8))
                captions.append("missing")
                continue
            pred = np.asarray(pred)
            panels.append(colorize(pred, palette, ignore_index))
            cap = f"acc {100 * pixel_accuracy(pred, label, ignore_index):.0f}%"
            ids, counts = np.unique(pred, return_counts=True)
            if counts.max() >= COLLAPSE_SHARE * pred.size:  # say it: one class everywhere on this image
                top = int(ids[counts.argmax()])
                cap += f", all {class_names[top] if 0 <= top < len(class_names) else f'class {top}'}"
            captions.append(cap)
        for j, (panel, cap) in enumerate(zip(panels, captions)):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=10)
            if cap:
                ax.text(0.03, 0.04, cap, transform=ax.transAxes, fontsize=7.5, va="bottom", ha="left",
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0})
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="0.3", label=n)
               for n, c in zip(class_names, palette)]
    ign = colorize(np.array([[ignore_index]]), palette, ignore_index)[0, 0] / 255.0
    handles.append(Patch(facecolor=ign, edgecolor="0.3", label="ignore"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize=8, frameon=False)
    return _save(fig, out_png, dpi)
