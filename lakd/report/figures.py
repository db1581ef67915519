"""Figures of the report: training curves from metrics.jsonl and a grid of example predictions.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot, so nothing
touches a display or global backend state (works on headless machines and inside tests).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lakd import IGNORE_INDEX
from lakd.report.results import ROLE_TITLES, StageResult, read_metrics

ROLE_COLORS = {
    "teacher_label": "#d62728",
    "teacher_image": "#7f7f7f",
    "baseline": "#1f77b4",
    "kd": "#ff7f0e",
    "lad": "#2ca02c",
}


def _save(fig: Figure, out_png: str | Path, dpi: int) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = out_png.with_name(f"{out_png.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    tmp.replace(out_png)
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


def _plot_run(axes, role: str, steps: list[dict], evals: list[dict], seen: set) -> None:
    col = 0 if role.startswith("teacher") else 1
    color, label = ROLE_COLORS[role], ROLE_TITLES[role]
    if steps:
        x = np.array([s["step"] for s in steps], dtype=float)
        y = np.array([float(s["loss"]) for s in steps], dtype=float)
        ok = np.isfinite(y)
        axes[0, col].plot(x[ok], _smooth(y[ok]), color=color, lw=1.3, alpha=0.85,
                          label=label if (col, role) not in seen else None)
        seen.add((col, role))
    for which in ("label", "image"):
        pts = [(e["step"], _eval_mious(e).get(which)) for e in evals]
        pts = [(s, 100 * v) for s, v in pts if v is not None and math.isfinite(v)]
        if not pts:
            continue
        style = "--" if role == "teacher_label" and which == "image" else "-"
        tag = label if role != "teacher_label" else f"{label}, {'with label' if which == 'label' else 'zero label'}"
        key = (col + 2, f"{role}/{which}")
        axes[1, col].plot(*zip(*pts), style, color=color, marker="o", ms=3, lw=1.3,
                          label=tag if key not in seen else None)
        seen.add(key)


def plot_training_curves(results: Sequence[StageResult], out_png: str | Path, *, dpi: int = 110) -> Path:
    """2 x 2 panels: training loss (top) and validation mIoU (bottom), teachers (left) and students
    (right). One colour per role; each seed is its own line. The label-assisted teacher's validation is
    drawn solid with its label input and dashed with a zero label channel."""
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    seen: set[tuple[int, str]] = set()
    for r in results:
        steps, evals = read_metrics(r.metrics_path)
        for role in r.roles:
            _plot_run(axes, role, steps, evals, seen)
    titles = [["Teachers: training loss", "Students: training loss"],
              ["Teachers: validation mIoU (%)", "Students: validation mIoU (%)"]]
    for i in range(2):
        for j in range(2):
            ax = axes[i, j]
            ax.set_title(titles[i][j], fontsize=11)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8, loc="best")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
            if i == 0 and ax.lines and all(np.all(np.asarray(ln.get_ydata()) > 0) for ln in ax.lines):
                ax.set_yscale("log")
    fig.suptitle("Training curves (loss smoothed; one line per seed)", fontsize=12)
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
                      dpi: int = 110) -> Path:
    """One row per example: image | ground truth | one column per prediction, coloured with `palette`.

    `examples`: dicts with `image` ([H, W, 3] uint8 RGB), `label` ([H, W] train ids) and `preds`
    ({column title: [H, W] train ids}). Each prediction is captioned with its pixel accuracy on that
    image; a legend of the class colours sits under the grid."""
    if not examples:
        raise ValueError("plot_example_grid: no examples")
    titles = ["Image", "Ground truth", *pred_columns]
    nrow, ncol = len(examples), len(titles)
    h, w = np.asarray(examples[0]["label"]).shape
    cell = 2.2
    fig = Figure(figsize=(cell * ncol * min(max(w / h, 0.5), 2.0), cell * nrow + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(nrow, ncol, squeeze=False))
    for i, ex in enumerate(examples):
        label = np.asarray(ex["label"])
        panels = [np.asarray(ex["image"]), colorize(label, palette, ignore_index)]
        captions = ["", ""]
        for col in pred_columns:
            pred = ex["preds"].get(col)
            if pred is None:
                panels.append(np.full((*label.shape, 3), 235, dtype=np.uint8))
                captions.append("missing")
                continue
            pred = np.asarray(pred)
            panels.append(colorize(pred, palette, ignore_index))
            captions.append(f"acc {100 * pixel_accuracy(pred, label, ignore_index):.0f}%")
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
