"""A sweep spec -> the DAG of jobs that trains it.

Jobs (``Job.kind``):

- ``shards``: one per dataset, builds the train/val shards when a manifest is missing;
- ``stage``: one ``lakd train`` stage (``Job.stage`` = teacher / student / baseline) in its own run directory
  ``<sweep_dir>/<run_name>/<stage>/``. Teachers are deduplicated: one per dataset x teacher, shared by every
  student distilled from it. An image-only teacher (the KD row) is a ``baseline`` stage, shared with the
  baseline cell of the same model and seed when their configs agree;
- ``collect``: writes the results table once everything else ended.

Every stage job carries its fully resolved configuration (absolute paths), validated here, before anything is
submitted. Nothing here knows about Slurm: :mod:`lakd.sweep.slurm` and :mod:`lakd.sweep.local` execute a plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from lakd.rundir import StageDir
from lakd.sweep.spec import Resources, SweepSpec

@dataclass
class Job:
    key: str  # unique in the plan: "<kind or stage>/<name>"
    kind: str  # shards | stage | collect
    dataset: Optional[str] = None
    stage: Optional[str] = None  # teacher | student | baseline (stage jobs)
    run_name: Optional[str] = None
    stage_dir: Optional[Path] = None
    config: Optional[dict] = None  # resolved lakd config (Config.to_dict())
    shards: Optional[dict] = None  # shard jobs: arguments of lakd.data.build_shards per split
    deps: list[str] = field(default_factory=list)  # keys of the jobs this one needs
    resources: Optional[Resources] = None
    roles: list[str] = field(default_factory=list)  # teacher_label | teacher_image | baseline | finetune | kd | lad
    model: Optional[str] = None  # the sweep's short model name (stage jobs)
    seed: Optional[int] = None
    teacher: Optional[str] = None  # the sweep's teacher name (students)

    @property
    def world_size(self) -> int:
        r = self.resources
        return r.nodes * r.tasks if r is not None else 1

    @property
    def label(self) -> str:
        """Short human description for listings."""
        if self.kind != "stage":
            return f"{self.kind} {self.dataset or ''}".strip()
        what = "/".join(self.roles)
        extra = f" <- {self.teacher}" if self.teacher else ""
        return f"{what} {self.model}{extra} seed {self.seed}"

    def export_path(self) -> Optional[Path]:
        """The model this stage exports (``<stage_dir>/<stage>.safetensors``)."""
        return None if self.stage_dir is None else StageDir(self.stage_dir).export_weights

    def manifests(self) -> list[Path]:
        """Shard jobs: the manifests they write."""
        return [Path(p) for p in (self.shards or {}).get("manifests", {}).values()]


@dataclass
class Plan:
    spec: SweepSpec
    sweep_dir: Path
    jobs: dict[str, Job]  # in topological order (dependencies first)
    # how to build this plan again from any directory (lakd.sweep.locate): written to .sweep/source.json
    source: Optional[dict] = None

    @property
    def state_dir(self) -> Path:
        """Bookkeeping of the sweep: submitted job ids, resolved configs, Slurm logs, events."""
        return self.sweep_dir / ".sweep"

    def ordered(self) -> list[Job]:
        return list(self.jobs.values())

    def describe(self) -> dict:
        """JSON-able summary (written to ``.sweep/plan.json`` and printed by ``--dry-run``)."""
        out = []
        for j in self.jobs.values():
            item = {"key": j.key, "kind": j.kind, "deps": j.deps, "roles": j.roles}
            if j.kind == "stage":
                r = j.resources
                item.update(stage=j.stage, dataset=j.dataset, run_dir=str(j.stage_dir), model=j.model, seed=j.seed,
                            teacher=j.teacher, nodes=r.nodes, tasks_per_node=r.tasks,
                            gpus_per_node=r.gpus_per_node, cpus_per_task=r.cpus_per_task, time=r.time,
                            partition=r.partition)
            elif j.kind == "shards":
                item.update(dataset=j.dataset, manifests=[str(p) for p in j.manifests()])
            out.append(item)
        return {"sweep": self.spec.name, "sweep_dir": str(self.sweep_dir), "jobs": out}


def _value(v: Any) -> str:
    """An override value as lakd.config parses it back (YAML: `1e-05` in JSON would come back a string)."""
    from lakd.config import format_value

    return format_value(v)


def _overrides(*layers: dict[str, Any]) -> list[str]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return [f"{k}={_value(v)}" for k, v in merged.items()]


def dependency_depths(jobs: dict[str, "Job"]) -> dict[str, int]:
    """Each job's dependency depth: 0 without dependencies, else 1 + the deepest job it waits for."""
    depth: dict[str, int] = {}

    def of(key: str) -> int:
        if key not in depth:
            depth[key] = 1 + max((of(d) for d in jobs[key].deps), default=-1)
        return depth[key]

    for key in jobs:
        of(key)
    return depth


def build_plan(spec: SweepSpec, *, sweep_dir: Optional[Path] = None, cwd: Optional[Path] = None,
               world_size: Optional[Callable[[Resources], int]] = None) -> Plan:
    """Expand ``spec`` into jobs. ``sweep_dir`` defaults to ``<runs_dir>/<name>`` (relative to ``cwd``).
    ``world_size(resources)`` is the number of processes a stage will run with (default: nodes x tasks per node);
    configurations that cannot split their batch over it fail here, before anything is submitted.

    Raises ``ValueError`` (``lakd.config.ConfigError``) for a configuration lakd train would refuse.
    """
    from lakd.config import batch_layout, load_config

    cwd = Path(cwd or Path.cwd()).resolve()
    if sweep_dir is None:
        sweep_dir = Path(spec.runs_dir) / spec.name
    sweep_dir = (cwd / sweep_dir).resolve() if not Path(sweep_dir).is_absolute() else Path(sweep_dir)
    world_of = world_size or (lambda r: r.nodes * r.tasks)
    jobs: dict[str, Job] = {}

    def add(job: Job) -> Job:
        old = jobs.get(job.key)
        if old is None:
            jobs[job.key] = job
            return job
        if old.config != job.config:
            raise ValueError(
                f"sweep {spec.name}: two jobs share the run directory {job.stage_dir} with different configs "
                f"({old.label} and {job.label}); give one of them other overrides or another name"
            )
        old.roles += [r for r in job.roles if r not in old.roles]
        return old

    for ds in spec.datasets.values():
        def stage_job(stage: str, run_name: str, model: str, seed: int, extra: dict[str, Any], *,
                      roles: list[str], deps: list[str], teacher: Optional[str] = None,
                      teacher_export: Optional[Path] = None, init: Optional[Job] = None) -> Job:
            res = spec.resources.for_stage(stage)
            forced = {"run.name": run_name, "run.runs_dir": str(sweep_dir), "run.seed": seed,
                      "data.dataset": ds.name, "model": spec.models[model]}
            if teacher_export is not None:
                forced["teacher.export"] = str(teacher_export)
            if init is not None:  # init_from: start from that stage's export (a teacher's first conv is widened)
                forced["model.pretrained"] = str(init.export_path())
                deps = list(dict.fromkeys([*deps, init.key]))
            overrides = _overrides(spec.overrides, ds.overrides, spec.stage_overrides.get(stage, {}), extra, forced)
            cfg = load_config(ds.config, overrides, stage=stage, cwd=cwd)
            world = world_of(res)
            try:
                batch_layout(cfg, world)
            except ValueError as exc:
                raise ValueError(f"sweep {spec.name}, {stage} {run_name}: {exc}") from None
            return Job(key=f"{stage}/{run_name}", kind="stage", dataset=ds.name, stage=stage, run_name=run_name,
                       stage_dir=Path(cfg.stage_dir), config=cfg.to_dict(), deps=list(deps), resources=res,
                       roles=list(roles), model=model, seed=seed, teacher=teacher)

        # shards: built from the first stage's resolved data section (all stages of a dataset share it)
        shard_key = f"shards/{ds.name}"
        probe = load_config(ds.config, _overrides(spec.overrides, ds.overrides), cwd=cwd)
        splits = {}
        for split in (probe.data.train_split, probe.data.val_split):
            splits[split] = dict(ds.shards.splits.get(split) or {})
        unknown = sorted(set(ds.shards.splits) - set(splits))
        if unknown:
            raise ValueError(f"sweep {spec.name}: datasets.{ds.name}.shards.splits.{unknown[0]}: not a split the "
                             f"stages read ({', '.join(splits)})")
        shard_job = Job(key=shard_key, kind="shards", dataset=ds.name, roles=["shards"], shards={
            "dataset": probe.data.dataset, "out_dir": str(probe.data.shards_dir),
            "root": ds.shards.root if ds.shards.root is None else str((cwd / ds.shards.root).resolve()),
            "samples_per_shard": ds.shards.samples_per_shard, "workers": ds.shards.workers,
            "skip_bad": ds.shards.skip_bad, "splits": splits,
            "manifests": {probe.data.train_split: str(probe.manifest("train")),
                          probe.data.val_split: str(probe.manifest("val"))},
            # a manifest named in the config (data.*_manifest) is used as it is, never built
            "buildable": not (probe.data.train_manifest or probe.data.val_manifest),
        }, resources=spec.resources)
        jobs[shard_key] = shard_job

        tseed = spec.seed_of_teachers

        def baseline_job(model: str, seed: int) -> Job:
            """The plain baseline of `model` at `seed` (shared by the table's baseline row and init_from)."""
            return add(stage_job("baseline", f"{ds.name}-{model}-s{seed}", model, seed, {}, roles=["baseline"],
                                 deps=[shard_key]))

        teacher_jobs: dict[str, Job] = {}
        # the teachers students distil from, and those marked `standalone` (a row of their own, e.g. a variant)
        used = list(dict.fromkeys([p.teacher for p in spec.pairs]
                                  + [name for name, t in spec.teachers.items() if t.standalone]))
        for name in used:
            t = spec.teachers[name]
            init = baseline_job(t.model, tseed) if t.init_from == "baseline" else None
            if t.label_assisted:
                job = stage_job("teacher", f"{ds.name}-{t.name}", t.model, tseed, t.overrides,
                                roles=["teacher_label"], deps=[shard_key], init=init)
            else:  # image-only teacher: a supervised (baseline) stage of the teacher's model
                plain = not t.overrides and init is None
                run = f"{ds.name}-{t.model if plain else t.name}-s{tseed}"
                job = stage_job("baseline", run, t.model, tseed, t.overrides, roles=["teacher_image"],
                                deps=[shard_key], init=init)
            teacher_jobs[name] = add(job)
        for seed in spec.seeds:
            for b in spec.baselines:
                baseline_job(b, seed)
        for seed in spec.seeds:
            for p in spec.pairs:
                t = spec.teachers[p.teacher]
                tj = teacher_jobs[p.teacher]
                method = "lad" if t.label_assisted else "kd"
                init = baseline_job(p.student, seed) if p.init_from == "baseline" else None
                add(stage_job("student", f"{ds.name}-{p.student}-{method}-{t.name}-s{seed}", p.student, seed,
                              p.overrides, roles=[method], deps=[tj.key], teacher=t.name,
                              teacher_export=tj.export_path(), init=init))
                if init is not None:  # the fair control: the same fine-tuning without a teacher
                    extra = {**spec.stage_overrides.get("student", {}), **p.overrides}
                    add(stage_job("baseline", f"{ds.name}-{p.student}-finetune-s{seed}", p.student, seed, extra,
                                  roles=["finetune"], deps=[shard_key], init=init))

    # topological order: shards, then by dependency depth (baselines a teacher or student starts from, teachers,
    # students), teachers before the rest at equal depth (they gate the students), collect last
    depth = dependency_depths(jobs)

    def rank(j: Job) -> tuple[int, int]:
        return depth[j.key], 0 if any(r.startswith("teacher") for r in j.roles) else 1

    ordered = sorted(jobs.values(), key=rank)
    out = {j.key: j for j in ordered}
    out["collect"] = Job(key="collect", kind="collect", roles=["collect"], deps=[k for k in out],
                         resources=spec.resources)
    return Plan(spec=spec, sweep_dir=sweep_dir, jobs=out)
