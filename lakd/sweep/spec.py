"""Sweep files: which datasets, teachers, students, baselines and seeds a sweep trains, and with what resources.

A sweep file is YAML (shipped ones live in ``lakd/sweeps/<name>.yaml``: ``paper`` = the paper's grid,
``tiny`` = a synthetic sweep of tiny models for tests and the demo). Its shape::

    name: tiny                      # the sweep folder is <runs_dir>/<name>
    runs_dir: runs                  # relative paths: from the directory the launcher runs in
    seeds: [0]                      # students and baselines are trained once per seed
    teacher_seed: 0                 # teachers are trained once (default: the first seed)
    overrides: {train.iters: 40}    # dotted config overrides for every stage ...
    stage_overrides: {teacher: {}}  # ... and per stage (teacher / student / baseline)
    datasets:
      synthetic:
        config: synthetic           # preset name or config file given to `lakd train --config`
        overrides: {}               # dotted overrides for this dataset's stages
        shards:                     # how missing shards are built (lakd.data.build_shards)
          root: null                # the raw dataset folder (real datasets)
          samples_per_shard: 256
          splits: {train: {num_samples: 64}, val: {num_samples: 16}}   # per split reader options
    models:                         # short names -> build_model arguments (config `model` section)
      dlv3_r18: {name: deeplabv3, backbone: resnet18}
    teachers:                       # label_assisted: true -> a LAD teacher (stage `teacher`)
      dlv3_r18_la: {model: dlv3_r18, label_assisted: true, init_from: baseline}   # see INIT_FROM
      dlv3_r101: {model: dlv3_r101}          # image-only teacher for the KD row (a `baseline` stage)
    pairs:                          # distilled students: KD (image-only teacher) or LAD (label-assisted)
      - {teacher: dlv3_r18_la, student: dlv3_r18, init_from: baseline}
    baselines: [dlv3_r18]           # students trained without a teacher
    resources: {...}                # Slurm resources, see Resources

Everything is checked when the file is loaded; a mistake raises ``ValueError`` naming the key.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lakd.config import ConfigError, dotted_overrides, read_yaml

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
STAGES = ("teacher", "student", "baseline")
JOB_KINDS = ("shards", "collect")  # resources.per_stage may name these too (one CPU task each, lakd.sweep.slurm)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+]*$")  # no '-': run names join keys with '-'


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


@dataclass
class Resources:
    """Slurm resources of the training jobs (shard and collect jobs take one task on ``cpu_partition``).

    ``nodes x gpus_per_node`` processes per training job, one task per GPU; ``gpus_per_node: 0`` runs one CPU
    task per node (``tasks_per_node`` of them). ``per_stage`` overrides any field for one stage, e.g.
    ``{teacher: {time: "48:00:00"}}``; ``shards`` and ``collect`` set the CPU jobs' own (``{collect: {time: 30}}``).
    """

    partition: str = "gpu"
    cpu_partition: Optional[str] = None  # shard building + collect; None: `partition`
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: Optional[int] = None  # None: gpus_per_node (or 1 without GPUs)
    cpus_per_task: int = 8
    mem_gb: Optional[float] = None  # None: the cluster's default
    time: str = "24:00:00"  # Slurm time limit of one run of a job (it requeues and resumes after)
    signal_delay_s: int = 300  # USR2 this long before the time limit: checkpoint + requeue
    array_parallelism: int = 16  # array tasks running at once
    max_requeues: int = 50  # requeues after preemption / time limit, per job
    retries: int = 2  # requeues after a failure (a crashed or killed rank), per job
    srun_wait_s: int = 120  # after one task ends, the others get this long before srun kills them
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    additional: dict[str, Any] = field(default_factory=dict)  # further #SBATCH options
    per_stage: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def for_stage(self, stage: str) -> "Resources":
        extra = self.per_stage.get(stage) or {}
        out = dataclasses.replace(self, per_stage={})
        for key, value in extra.items():
            setattr(out, key, copy.deepcopy(value))
        return out


@dataclass
class ShardSpec:
    root: Optional[str] = None
    samples_per_shard: int = 256
    workers: Optional[int] = None
    skip_bad: bool = False
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> reader options


@dataclass
class DatasetSpec:
    name: str
    config: str  # preset name or config file
    overrides: dict[str, Any] = field(default_factory=dict)
    shards: ShardSpec = field(default_factory=ShardSpec)


# `init_from` of a teacher or a pair: where its model's weights start (the official LAD pipeline fine-tunes both the
# label-assisted teacher and the student from a trained baseline). `baseline`: the baseline export of the same
# model (a teacher: at the teacher seed; a student: at its own seed; a label-assisted teacher's first conv is
# widened for its label channels), trained by the sweep if it is not listed. A pair with `init_from` also gets the
# control that makes the comparison fair: the baseline fine-tuned for the same steps without a teacher (role
# `finetune`). null: from the config's `model.pretrained` (ImageNet weights or scratch).
INIT_FROM = ("baseline",)


@dataclass
class TeacherSpec:
    name: str
    model: str  # key of SweepSpec.models
    label_assisted: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: Optional[str] = None  # see INIT_FROM
    standalone: bool = False  # trained and reported although no pair distils from it


@dataclass
class PairSpec:
    teacher: str
    student: str
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: Optional[str] = None  # see INIT_FROM


@dataclass
class SweepSpec:
    name: str
    datasets: dict[str, DatasetSpec]
    models: dict[str, dict[str, Any]]
    teachers: dict[str, TeacherSpec] = field(default_factory=dict)
    pairs: list[PairSpec] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    teacher_seed: Optional[int] = None
    runs_dir: str = "runs"
    overrides: dict[str, Any] = field(default_factory=dict)
    stage_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    source: Optional[str] = None  # the file it was read from

    @property
    def seed_of_teachers(self) -> int:
        return self.seeds[0] if self.teacher_seed is None else self.teacher_seed


# ------------------------------------------------------------------------------------------------ loading
def _fail(where: str, msg: str) -> None:
    raise ValueError(f"sweep file {where}: {msg}")


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(where, f"expected a mapping, got {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        _fail(where, f"names may hold letters, digits, '_', '.', '+' (no '-'), got {value!r}")
    return value


def _dataclass(cls: type, data: Any, where: str, **extra: Any) -> Any:
    data = _mapping(data, where)
    names = {f.name for f in dataclasses.fields(cls)} - set(extra)
    unknown = sorted(set(data) - names)
    if unknown:
        _fail(f"{where}.{unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(names))}")
    try:
        return cls(**data, **extra)
    except TypeError as exc:  # a required key missing
        _fail(where, str(exc).split("__init__() ")[-1])


def _check_types(obj: Any, where: str) -> None:
    """Scalar fields of a loaded dataclass have the annotated type (int/float/str/bool/None)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        args = typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)
        if value is None:
            if type(None) not in args:
                _fail(f"{where}.{f.name}", "must not be null")
            continue
        simple = [a for a in args if a in (int, float, str, bool)]
        if not simple:
            continue
        ok = any(isinstance(value, a) and not (a in (int, float) and isinstance(value, bool)) for a in simple)
        ok = ok or (float in simple and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            _fail(f"{where}.{f.name}", f"expected {' or '.join(a.__name__ for a in simple)}, got {value!r}")


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """Dotted overrides as a flat mapping ``{"train.iters": 40}`` (a nested mapping is flattened), read by
    lakd.config's override parser, the one ``lakd train key=value`` uses."""
    try:
        return dotted_overrides(_mapping(value, where))
    except ConfigError as exc:
        _fail(where, str(exc))


def resolve_source(source: str | Path) -> Path:
    """A sweep name (``tiny``, ``paper``) or a path to a sweep file."""
    path = Path(source)
    # a folder of the same name (e.g. the demo's output folder `demo/`) does not hide the shipped sweep
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in str(source):
        if not path.is_file():
            raise ValueError(f"sweep file not found: {source}")
        return path
    named = SWEEPS_DIR / f"{source}.yaml"
    if not named.exists():
        raise ValueError(f"no sweep file or shipped sweep named {source!r} (shipped: {', '.join(list_sweeps())})")
    return named


def _check_init_from(value: Any, at: str) -> None:
    if value is not None and value not in INIT_FROM:
        _fail(at, f"unknown stage {value!r}; init_from takes {', '.join(INIT_FROM)} or null")


def load_spec(source: str | Path | dict, overrides: Optional[dict[str, Any]] = None) -> SweepSpec:
    """Read and check a sweep file (name, path or an already parsed mapping). ``overrides`` replaces top-level
    keys (e.g. ``{"runs_dir": "/tmp/x", "seeds": [0, 1]}``) before checking."""
    where = "<mapping>"
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = resolve_source(source)
        where = str(path)
        try:
            raw = read_yaml(path, "a sweep file")  # the loader of config files
        except ConfigError as exc:
            raise ValueError(f"sweep file {exc}") from None
    for key, value in (overrides or {}).items():
        raw[key] = copy.deepcopy(value)
    spec = parse_spec(raw, where)
    spec.source = None if isinstance(source, dict) else where
    return spec


def parse_spec(raw: dict, where: str = "<mapping>") -> SweepSpec:
    raw = copy.deepcopy(_mapping(raw, where))
    known = {f.name for f in dataclasses.fields(SweepSpec)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        _fail(f"{where}: {unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(known))}")
    name = _name(raw.get("name"), f"{where}: name")

    datasets = {}
    for ds, body in _mapping(raw.get("datasets"), f"{where}: datasets").items():
        body = dict(_mapping(body, f"{where}: datasets.{ds}"))
        shards = _dataclass(ShardSpec, body.pop("shards", None), f"{where}: datasets.{ds}.shards")
        _check_types(shards, f"{where}: datasets.{ds}.shards")
        for split, opts in list(shards.splits.items()):
            shards.splits[split] = _mapping(opts, f"{where}: datasets.{ds}.shards.splits.{split}")
        body["overrides"] = _overrides(body.get("overrides"), f"{where}: datasets.{ds}.overrides")
        body.setdefault("config", ds)
        datasets[_name(ds, f"{where}: datasets")] = _dataclass(
            DatasetSpec, body, f"{where}: datasets.{ds}", name=ds, shards=shards)
        _check_types(datasets[ds], f"{where}: datasets.{ds}")
    if not datasets:
        _fail(f"{where}: datasets", "a sweep needs at least one dataset")

    models = {}
    for key, body in _mapping(raw.get("models"), f"{where}: models").items():
        body = _mapping(body, f"{where}: models.{key}")
        if not isinstance(body.get("name"), str):
            _fail(f"{where}: models.{key}.name", "every model needs a `name` (e.g. deeplabv3)")
        models[_name(key, f"{where}: models")] = dict(body)

    def model_ref(value: Any, at: str) -> str:
        if value not in models:
            _fail(at, f"unknown model {value!r}; models of this sweep: {', '.join(models) or 'none'}")
        return value

    teachers = {}
    for key, body in _mapping(raw.get("teachers"), f"{where}: teachers").items():
        body = dict(_mapping(body, f"{where}: teachers.{key}"))
        body["overrides"] = _overrides(body.get("overrides"), f"{where}: teachers.{key}.overrides")
        t = _dataclass(TeacherSpec, body, f"{where}: teachers.{key}", name=_name(key, f"{where}: teachers"))
        _check_types(t, f"{where}: teachers.{key}")
        model_ref(t.model, f"{where}: teachers.{key}.model")
        _check_init_from(t.init_from, f"{where}: teachers.{key}.init_from")
        teachers[key] = t

    pairs = []
    raw_pairs = raw.get("pairs") or []
    if not isinstance(raw_pairs, list):
        _fail(f"{where}: pairs", "expected a list of {teacher: ..., student: ...}")
    seen_roles: dict[tuple[str, bool], str] = {}
    for i, body in enumerate(raw_pairs):
        body = dict(_mapping(body, f"{where}: pairs[{i}]"))
        body["overrides"] = _overrides(body.get("overrides"), f"{where}: pairs[{i}].overrides")
        p = _dataclass(PairSpec, body, f"{where}: pairs[{i}]")
        if p.teacher not in teachers:
            _fail(f"{where}: pairs[{i}].teacher", f"unknown teacher {p.teacher!r}; teachers: {', '.join(teachers) or 'none'}")
        model_ref(p.student, f"{where}: pairs[{i}].student")
        _check_init_from(p.init_from, f"{where}: pairs[{i}].init_from")
        role = (p.student, teachers[p.teacher].label_assisted)
        if role in seen_roles:
            kind = "label-assisted (LAD)" if role[1] else "image-only (KD)"
            _fail(f"{where}: pairs[{i}]", f"student {p.student!r} already has a {kind} teacher "
                  f"({seen_roles[role]!r}); the results table holds one per student")
        seen_roles[role] = p.teacher
        pairs.append(p)

    baselines = raw.get("baselines") or []
    if not isinstance(baselines, list):
        _fail(f"{where}: baselines", "expected a list of model names")
    baselines = [model_ref(b, f"{where}: baselines") for b in dict.fromkeys(baselines)]

    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        _fail(f"{where}: seeds", f"expected a non-empty list of integers, got {seeds!r}")
    teacher_seed = raw.get("teacher_seed")
    if teacher_seed is not None and (not isinstance(teacher_seed, int) or isinstance(teacher_seed, bool)):
        _fail(f"{where}: teacher_seed", f"expected an integer, got {teacher_seed!r}")
    runs_dir = raw.get("runs_dir", "runs")
    if not isinstance(runs_dir, str) or not runs_dir:
        _fail(f"{where}: runs_dir", f"expected a path, got {runs_dir!r}")

    stage_overrides = {}
    for stage, body in _mapping(raw.get("stage_overrides"), f"{where}: stage_overrides").items():
        if stage not in STAGES:
            _fail(f"{where}: stage_overrides.{stage}", f"unknown stage; stages: {', '.join(STAGES)}")
        stage_overrides[stage] = _overrides(body, f"{where}: stage_overrides.{stage}")

    resources = _dataclass(Resources, raw.get("resources"), f"{where}: resources")
    check_resources(resources, f"{where}: resources")
    for stage in resources.per_stage:
        if stage not in STAGES + JOB_KINDS:
            _fail(f"{where}: resources.per_stage.{stage}", f"unknown stage; stages: {', '.join(STAGES + JOB_KINDS)}")
        _dataclass(Resources, resources.per_stage[stage], f"{where}: resources.per_stage.{stage}")
        check_resources(resources.for_stage(stage), f"{where}: resources.per_stage.{stage}")

    if not pairs and not baselines:
        _fail(where, "nothing to train: give `pairs` and/or `baselines`")
    return SweepSpec(
        name=name, datasets=datasets, models=models, teachers=teachers, pairs=pairs, baselines=baselines,
        seeds=list(dict.fromkeys(seeds)), teacher_seed=teacher_seed, runs_dir=runs_dir,
        overrides=_overrides(raw.get("overrides"), f"{where}: overrides"), stage_overrides=stage_overrides,
        resources=resources,
    )


_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


def time_minutes(value: str) -> float:
    """Slurm time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in minutes."""
    text = str(value).strip()
    if not _TIME.match(text):
        raise ValueError(f"not a Slurm time limit: {value!r} (e.g. 90, 04:00:00, 2-00:00:00)")
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-H[:M[:S]]
        h, m, s = (parts + [0, 0])[:3]
        return int(days) * 1440 + h * 60 + m + s / 60
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def check_resources(r: Resources, where: str) -> None:
    _check_types(r, where)
    for key in ("nodes", "cpus_per_task", "array_parallelism"):
        if getattr(r, key) < 1:
            _fail(f"{where}.{key}", f"must be >= 1, got {getattr(r, key)}")
    for key in ("gpus_per_node", "max_requeues", "retries", "signal_delay_s", "srun_wait_s"):
        if getattr(r, key) < 0:
            _fail(f"{where}.{key}", f"must be >= 0, got {getattr(r, key)}")
    if r.tasks_per_node is not None and r.tasks_per_node < 1:
        _fail(f"{where}.tasks_per_node", f"must be >= 1, got {r.tasks_per_node}")
    try:
        minutes = time_minutes(r.time)
    except ValueError as exc:
        _fail(f"{where}.time", str(exc))
    if minutes * 60 <= r.signal_delay_s:
        _fail(f"{where}.signal_delay_s", f"{r.signal_delay_s} s is not shorter than the time limit {r.time}")
    if not isinstance(r.setup, list) or not all(isinstance(s, str) for s in r.setup):
        _fail(f"{where}.setup", "expected a list of shell lines")
    _mapping(r.additional, f"{where}.additional")
