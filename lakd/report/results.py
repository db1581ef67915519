"""Read finished stages (ARCHITECTURE.md "Stage outputs") and sort them into the rows of the paper's table.

A stage directory `<runs>/<run_name>/<stage>/` holds `result.json` (final evaluation) and `metrics.jsonl`.
Each result gets one or more *roles*, derived from the contract alone:

- `teacher_label`: a teacher stage whose model takes label channels (its result has `eval.label`);
- `teacher_image`: a teacher stage that sees the image only, or any stage whose export a KD student was
  distilled from (the sweep trains the KD row's image-only teacher as a `baseline` stage);
- `baseline`: a student trained without a teacher, from scratch (or from backbone weights only);
- `finetune`: a student trained without a teacher whose weights started from a whole trained model
  (`init.scope == "model"`): the baseline fine-tuned for the same extra steps as students initialised from it,
  their fair control;
- `kd`: a student distilled from an image-only teacher (`teacher.label_channels == 0`);
- `lad`: a student distilled from a label-assisted teacher (`teacher.label_channels > 0`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from lakd.rundir import RESULT, StageDir, metrics_records

ROLES = ("teacher_label", "teacher_image", "baseline", "finetune", "kd", "lad")
ROLE_TITLES = {
    "teacher_label": "Teacher, label-assisted",
    "teacher_image": "Teacher, image only",
    "baseline": "Student, baseline",
    "finetune": "Student, baseline fine-tuned (control)",
    "kd": "Student, KD (image-only teacher)",
    "lad": "Student, LAD (label-assisted teacher)",
}
STUDENT_ROLES = ("baseline", "finetune", "kd", "lad")
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
    def files(self) -> StageDir:
        """The stage folder's files (lakd.rundir)."""
        return StageDir(self.stage_dir)

    @property
    def metrics_path(self) -> Path:
        return self.files.metrics

    def miou(self, which: str = "image") -> float | None:
        ev = (self.data.get("eval") or {}).get(which)
        return None if not ev or ev.get("miou") is None else float(ev["miou"])

    def iou(self, which: str = "image") -> list[float] | None:
        ev = (self.data.get("eval") or {}).get(which)
        return None if not ev or ev.get("iou") is None else [float(v) for v in ev["iou"]]

    def metrics(self, which: str = "image") -> dict | None:
        ev = (self.data.get("eval") or {}).get(which)
        return ev if isinstance(ev, dict) else None

    @property
    def init_scope(self) -> str | None:
        """"model" when the weights started from a whole trained model (fine-tuned), "backbone" for backbone
        weights only, None from scratch (or a result.json older than the `init` entry)."""
        init = self.data.get("init")
        return init.get("scope") if isinstance(init, dict) else None

    @cached_property
    def dual_path(self) -> bool | None:
        """Label-assisted teacher: trained on two noised paths (the paper's teacher) or one; None when the
        stage's config.yaml does not say (or this is no label-assisted teacher)."""
        if self.data.get("stage") != "teacher" or self.metrics("label") is None:
            return None
        cfg = self.files.read_config()
        tl = cfg.get("teacher_loss") if isinstance(cfg, dict) else None
        if isinstance(tl, dict) and isinstance(tl.get("dual_path"), bool):
            return tl["dual_path"]
        return None

    def title(self, role: str | None = None) -> str:
        """The role's title; label-assisted teachers name their variant (dual path = the paper's)."""
        role = role or self.role
        base = ROLE_TITLES[role]
        if role == "teacher_label" and self.dual_path is not None:
            return f"{base}, dual path (paper)" if self.dual_path else f"{base}, single path"
        return base

    def export_path(self) -> Path | None:
        """The stage's exported model (`<stage_dir>/<stage>.safetensors`), if it was written."""
        p = self.files.export_weights
        return p if p.exists() else None


def role_of(data: dict[str, Any]) -> str:
    """The table role of one result.json (see the module docstring)."""
    stage = data.get("stage")
    if stage == "teacher":
        return "teacher_label" if (data.get("eval") or {}).get("label") else "teacher_image"
    init = data.get("init")
    fine_tuned = isinstance(init, dict) and init.get("scope") == "model"
    if stage == "baseline":
        return "finetune" if fine_tuned else "baseline"
    if stage == "student":
        teacher = data.get("teacher")
        if not teacher:
            return "finetune" if fine_tuned else "baseline"
        return "lad" if int(teacher.get("label_channels") or 0) > 0 else "kd"
    raise ValueError(f"result.json: unknown stage {stage!r}")


def _seed_of(files: StageDir, data: dict[str, Any]) -> int | None:
    """The training seed: from result.json if it says, else from the stage's saved config.yaml."""
    if isinstance(data.get("seed"), int):
        return data["seed"]
    cfg = files.read_config()
    if not cfg:
        return None
    stack = [cfg]
    while stack:  # the first `seed` key, breadth first (top level wins over nested sections)
        node = stack.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("seed"), int):
                return node["seed"]
            stack.extend(v for v in node.values() if isinstance(v, dict))
    return None


def load_result(stage_dir: str | Path | StageDir) -> StageResult:
    """Read `<stage_dir>/result.json`; ValueError (`lakd.rundir.ResultError`) naming the file when it is
    missing, cut short or malformed."""
    files = stage_dir if isinstance(stage_dir, StageDir) else StageDir(Path(stage_dir))
    data = files.read_result()
    return StageResult(stage_dir=files.path, data=data, role=role_of(data), seed=_seed_of(files, data))


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
    found = link_teachers([load_result(p.parent) for p in sorted(root.rglob(RESULT))])
    return sorted(found, key=lambda r: (min(ROLES.index(x) for x in r.roles), r.dataset, r.run_name))


def read_metrics(source: str | Path | StageDir | Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """Split a stage's metrics (a StageDir, the path of a metrics.jsonl, or its records) into (training-step
    records, evaluation records). Unparsable lines are skipped (a run killed mid-write may leave a partial
    last line)."""
    if isinstance(source, StageDir):
        source = source.metrics_records()
    elif isinstance(source, (str, Path)):
        source = metrics_records(source)
    steps, evals = [], []
    for rec in source:
        if "eval" in rec:
            evals.append(rec)
        elif "loss" in rec:
            steps.append(rec)
    return steps, evals
