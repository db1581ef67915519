"""Read finished stages (ARCHITECTURE.md "Stage outputs") and sort them into the rows of the paper's table.

A stage directory `<runs>/<run_name>/<stage>/` holds `result.json` (final evaluation) and `metrics.jsonl`.
Each result gets one or more *roles*, derived from the contract alone:

- `teacher_label`: a teacher stage whose model takes label channels (its result has `eval.label`);
- `teacher_image`: a teacher stage that sees the image only, or any stage whose export a KD student was
  distilled from (the sweep trains the KD row's image-only teacher as a `baseline` stage);
- `baseline`: a student trained without a teacher;
- `kd`: a student distilled from an image-only teacher (`teacher.label_channels == 0`);
- `lad`: a student distilled from a label-assisted teacher (`teacher.label_channels > 0`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = ("teacher_label", "teacher_image", "baseline", "finetune", "kd", "lad")
ROLE_TITLES = {
    "teacher_label": "Teacher, label-assisted",
    "teacher_image": "Teacher, image only",
    "baseline": "Student, baseline",
    "finetune": "Student, baseline fine-tuned (control)",
    "kd": "Student, KD (image-only teacher)",
    "lad": "Student, LAD (label-assisted teacher)",
}
STUDENT_ROLES = ("baseline", "kd", "lad")
TEACHER_ROLES = ("teacher_label", "teacher_image")


@dataclass
class StageResult:
    """One finished stage: its directory, its result.json and the role it plays in the table."""

    stage_dir: Path
    data: dict[str, Any]
    role: str  # from the stage alone (`role_of`)
    seed: int | None = None
    roles: tuple[str, ...] = ()  # every role it plays in the table (`find_results` links KD teachers)

    def __post_init__(self):
        if not self.roles:
            self.roles = (self.role,)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def run_name(self) -> str:
        return str(self.data.get("run_name") or self.stage_dir.parent.name)

    @property
    def dataset(self) -> str:
        return str(self.data.get("dataset", "?"))

    @property
    def arch(self) -> str:
        """`name-backbone` of the trained model, e.g. `deeplabv3-resnet18`."""
        model = self.data.get("model") or {}
        name, backbone = model.get("name", "?"), model.get("backbone")
        arch = f"{name}-{backbone}" if backbone else str(name)
        width = model.get("width", 1.0)
        return arch if width in (None, 1, 1.0) else f"{arch}-w{width:g}"

    @property
    def metrics_path(self) -> Path:
        return self.stage_dir / "metrics.jsonl"

    def miou(self, which: str = "image") -> float | None:
        ev = (self.data.get("eval") or {}).get(which)
        return None if not ev or ev.get("miou") is None else float(ev["miou"])

    def iou(self, which: str = "image") -> list[float] | None:
        ev = (self.data.get("eval") or {}).get(which)
        return None if not ev or ev.get("iou") is None else [float(v) for v in ev["iou"]]

    def export_path(self) -> Path | None:
        """The stage's exported model (`<stage_dir>/<stage>.safetensors`), if it was written."""
        p = self.stage_dir / f"{self.data.get('stage', self.stage_dir.name)}.safetensors"
        return p if p.exists() else None


def role_of(data: dict[str, Any]) -> str:
    """The table role of one result.json (see the module docstring)."""
    stage = data.get("stage")
    if stage == "teacher":
        return "teacher_label" if (data.get("eval") or {}).get("label") else "teacher_image"
    if stage == "baseline":
        return "baseline"
    if stage == "student":
        teacher = data.get("teacher")
        if not teacher:
            return "baseline"
        return "lad" if int(teacher.get("label_channels") or 0) > 0 else "kd"
    raise ValueError(f"result.json: unknown stage {stage!r}")


def _seed_of(stage_dir: Path, data: dict[str, Any]) -> int | None:
    """The training seed: from result.json if it says, else from the stage's saved config.yaml."""
    if isinstance(data.get("seed"), int):
        return data["seed"]
    cfg_path = stage_dir / "config.yaml"
    if not cfg_path.exists():
        return None
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError:
        return None
    stack = [cfg]
    while stack:  # the first `seed` key, breadth first (top level wins over nested sections)
        node = stack.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("seed"), int):
                return node["seed"]
            stack.extend(v for v in node.values() if isinstance(v, dict))
    return None


def load_result(stage_dir: str | Path) -> StageResult:
    """Read `<stage_dir>/result.json`; ValueError naming the file when it is missing or malformed."""
    stage_dir = Path(stage_dir)
    path = stage_dir / "result.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no result.json (stage not finished?)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or "eval" not in data:
        raise ValueError(f"{path}: not a stage result (no 'eval' entry)")
    return StageResult(stage_dir=stage_dir, data=data, role=role_of(data), seed=_seed_of(stage_dir, data))


def link_teachers(results: list[StageResult]) -> list[StageResult]:
    """Give the `teacher_image` role to every stage a KD student was distilled from (matched by the
    student's `teacher.export` path). Such a stage stays a `baseline` too only when distilled students of its
    architecture exist in its dataset (then it is also that row's baseline run, e.g. the sweep reuses the
    seed's baseline as the image-only teacher); a bigger model trained only to teach leaves the baseline row."""
    by_dir = {r.stage_dir.resolve(): r for r in results}
    distilled = {(r.dataset, r.arch) for r in results if r.role in ("kd", "lad")}
    for s in results:
        teacher = s.data.get("teacher") or {}
        if s.role != "kd" or not teacher.get("export"):
            continue
        t = by_dir.get(Path(teacher["export"]).parent.resolve())
        if t is None or t.has_role("teacher_image"):
            continue
        keep = tuple(x for x in t.roles if x != "baseline" or (t.dataset, t.arch) in distilled)
        t.roles = keep + ("teacher_image",)
    return results


def find_results(root: str | Path) -> list[StageResult]:
    """Every finished stage under `root` (any depth), sorted by role, dataset, run name, with KD teachers
    linked (`link_teachers`)."""
    root = Path(root)
    found = link_teachers([load_result(p.parent) for p in sorted(root.rglob("result.json"))])
    return sorted(found, key=lambda r: (min(ROLES.index(x) for x in r.roles), r.dataset, r.run_name))


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Split a metrics.jsonl into (training-step records, evaluation records). Unparsable lines are skipped
    (a run killed mid-write may leave a partial last line)."""
    steps, evals = [], []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return steps, evals
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or "step" not in rec:
            continue
        if "eval" in rec:
            evals.append(rec)
        elif "loss" in rec:
            steps.append(rec)
    return steps, evals
