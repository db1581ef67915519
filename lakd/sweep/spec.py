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

Everything is checked when the file is loaded, by the same pydantic sections and error translator as the
training config (lakd.config): a mistake raises one ``ValueError`` line naming the key
(``sweep file tiny.yaml: resources.gpus_per_node: expected an integer, got 2.5``).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from lakd.config import ConfigError, dotted_overrides, read_yaml
from lakd.config.errors import FieldError, problem, require
from lakd.config.values import Bool, Count, Int, Pos, Positive, Str, section

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
STAGES = ("teacher", "student", "baseline")
JOB_KINDS = ("shards", "collect")  # resources.per_stage may name these too (one CPU task each, lakd.sweep.slurm)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+]*$")  # no '-': run names join keys with '-'


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


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


def _minutes_as_text(value: Any) -> Any:
    """YAML reads ``time: 30`` as an integer: Slurm reads it as minutes, and so does lakd."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


SlurmTime = Annotated[Str, BeforeValidator(_minutes_as_text)]


# ------------------------------------------------------------------------------------------ sections
@section
class Resources:
    """Slurm resources of the training jobs (shard and collect jobs take one task on ``cpu_partition``).

    ``nodes x gpus_per_node`` processes per training job, one task per GPU; ``gpus_per_node: 0`` runs one CPU
    task per node (``tasks_per_node`` of them). ``per_stage`` overrides any field for one stage, e.g.
    ``{teacher: {time: "48:00:00"}}``; ``shards`` and ``collect`` set the CPU jobs' own (``{collect: {time: 30}}``).
    """

    partition: Str = "gpu"
    cpu_partition: Optional[Str] = None  # shard building + collect; None: `partition`
    nodes: Positive = 1
    gpus_per_node: Count = 1
    tasks_per_node: Optional[Positive] = None  # None: gpus_per_node (or 1 without GPUs)
    cpus_per_task: Positive = 8
    mem_gb: Optional[Pos] = None  # None: the cluster's default
    time: SlurmTime = "24:00:00"  # Slurm time limit of one run of a job (it requeues and resumes after)
    signal_delay_s: Count = 300  # USR2 this long before the time limit: checkpoint + requeue
    array_parallelism: Positive = 16  # array tasks running at once
    max_requeues: Count = 50  # requeues after preemption / time limit, per job
    retries: Count = 2  # requeues after a failure (a crashed or killed rank), per job
    srun_wait_s: Count = 120  # after one task ends, the others get this long before srun kills them
    account: Optional[Str] = None
    qos: Optional[Str] = None
    constraint: Optional[Str] = None
    exclude: Optional[Str] = None
    setup: list[Str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    additional: dict[Str, Any] = field(default_factory=dict)  # further #SBATCH options
    per_stage: dict[Str, dict[Str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            minutes = time_minutes(self.time)
        except ValueError as exc:
            raise FieldError("time", str(exc)) from None
        require(minutes * 60 > self.signal_delay_s, "signal_delay_s",
                f"{self.signal_delay_s} s is not shorter than the time limit {self.time}")
        unknown = sorted(set(self.per_stage) - set(STAGES + JOB_KINDS))
        require(not unknown, "per_stage", f"unknown stage {unknown[0] if unknown else ''!r}; stages: "
                f"{', '.join(STAGES + JOB_KINDS)}")

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def for_stage(self, stage: str) -> "Resources":
        """These resources with ``per_stage[stage]`` applied (checked when the sweep file was loaded)."""
        return dataclasses.replace(self, per_stage={}, **copy.deepcopy(self.per_stage.get(stage) or {}))


@section
class ShardSpec:
    root: Optional[Str] = None
    samples_per_shard: Positive = 256
    workers: Optional[Positive] = None
    skip_bad: Bool = False
    splits: dict[Str, dict[Str, Any]] = field(default_factory=dict)  # split -> reader options


@section
class DatasetSpec:
    name: Str
    config: Str  # preset name or config file
    overrides: dict[Str, Any] = field(default_factory=dict)
    shards: ShardSpec = field(default_factory=ShardSpec)


# `init_from` of a teacher or a pair: where its model's weights start (the official LAD pipeline fine-tunes both the
# label-assisted teacher and the student from a trained baseline). `baseline`: the baseline export of the same
# model (a teacher: at the teacher seed; a student: at its own seed; a label-assisted teacher's first conv is
# widened for its label channels), trained by the sweep if it is not listed. A pair with `init_from` also gets the
# control that makes the comparison fair: the baseline fine-tuned for the same steps without a teacher (role
# `finetune`). null: from the config's `model.pretrained` (ImageNet weights or scratch).
INIT_FROM = ("baseline",)


def _check_init_from(value: Optional[str]) -> None:
    require(value is None or value in INIT_FROM, "init_from",
            f"unknown stage {value!r}; init_from takes {', '.join(INIT_FROM)} or null")


@section
class TeacherSpec:
    name: Str
    model: Str  # key of SweepSpec.models
    label_assisted: Bool = False
    overrides: dict[Str, Any] = field(default_factory=dict)
    init_from: Optional[Str] = None  # see INIT_FROM
    standalone: Bool = False  # trained and reported although no pair distils from it

    def __post_init__(self) -> None:
        _check_init_from(self.init_from)


@section
class PairSpec:
    teacher: Str
    student: Str
    overrides: dict[Str, Any] = field(default_factory=dict)
    init_from: Optional[Str] = None  # see INIT_FROM

    def __post_init__(self) -> None:
        _check_init_from(self.init_from)


@section
class SweepSpec:
    name: Str
    datasets: dict[Str, DatasetSpec]
    models: dict[Str, dict[Str, Any]]
    teachers: dict[Str, TeacherSpec] = field(default_factory=dict)
    pairs: list[PairSpec] = field(default_factory=list)
    baselines: list[Str] = field(default_factory=list)
    seeds: list[Int] = field(default_factory=lambda: [0])
    teacher_seed: Optional[Int] = None
    runs_dir: Str = "runs"
    overrides: dict[Str, Any] = field(default_factory=dict)
    stage_overrides: dict[Str, dict[Str, Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    source: Optional[Str] = None  # the file it was read from

    def __post_init__(self) -> None:
        require(bool(self.seeds), "seeds", f"expected a non-empty list of integers, got {self.seeds!r}")
        self.seeds = list(dict.fromkeys(self.seeds))
        require(bool(self.runs_dir), "runs_dir", f"expected a path, got {self.runs_dir!r}")

    @property
    def seed_of_teachers(self) -> int:
        return self.seeds[0] if self.teacher_seed is None else self.teacher_seed


# ------------------------------------------------------------------------------------------------ errors
def _fail(where: str, msg: str) -> None:
    raise ValueError(f"sweep file {where}: {msg}")


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _section(cls: type, data: Any, where: str, at: str, **extra: Any) -> Any:
    """``data`` (a mapping from the sweep file, at key ``at``) validated into section ``cls``; ``extra``: fields
    lakd fills in itself (a dataset's name is its key)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(f"{where}: {at}", f"expected a mapping, got {data!r}")
    try:
        return _adapter(cls).validate_python({**data, **extra})
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "missing":
            _fail(f"{where}: {'.'.join(str(k) for k in (at, *first['loc']) if k)}", "required key missing")
        found = problem(exc, cls)  # lakd.config's first problem, in the words of a sweep file
    key = ".".join(k for k in (at, found.key) if k)  # the key's full place
    if found.unknown:
        valid = sorted({f.name for f in dataclasses.fields(cls)} - set(extra))
        _fail(f"{where}: {key}", f"unknown key{found.hint}; valid keys: {', '.join(valid)}")
    _fail(f"{where}: {key}", found.text)


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


# ------------------------------------------------------------------------------------------------ loading
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
    """The sections are checked by their types (:func:`_section`); what spans sections here: names, references
    between them (a pair's teacher, a teacher's model), one teacher of each kind per student."""
    raw = copy.deepcopy(_mapping(raw, where))
    known = {f.name for f in dataclasses.fields(SweepSpec)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        _fail(f"{where}: {unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(known))}")
    name = _name(raw.get("name"), f"{where}: name")

    datasets = {}
    for ds, body in _mapping(raw.get("datasets"), f"{where}: datasets").items():
        body = dict(_mapping(body, f"{where}: datasets.{ds}"))
        at = f"datasets.{ds}"
        shards = _section(ShardSpec, body.pop("shards", None), where, f"{at}.shards")
        body["overrides"] = _overrides(body.get("overrides"), f"{where}: {at}.overrides")
        body.update(config=body.get("config", ds), shards=shards)
        datasets[_name(ds, f"{where}: datasets")] = _section(DatasetSpec, body, where, at, name=ds)
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
        t = _section(TeacherSpec, body, where, f"teachers.{key}", name=_name(key, f"{where}: teachers"))
        model_ref(t.model, f"{where}: teachers.{key}.model")
        teachers[key] = t

    pairs = []
    raw_pairs = raw.get("pairs") or []
    if not isinstance(raw_pairs, list):
        _fail(f"{where}: pairs", "expected a list of {teacher: ..., student: ...}")
    seen_roles: dict[tuple[str, bool], str] = {}
    for i, body in enumerate(raw_pairs):
        body = dict(_mapping(body, f"{where}: pairs[{i}]"))
        body["overrides"] = _overrides(body.get("overrides"), f"{where}: pairs[{i}].overrides")
        p = _section(PairSpec, body, where, f"pairs[{i}]")
        if p.teacher not in teachers:
            _fail(f"{where}: pairs[{i}].teacher",
                  f"unknown teacher {p.teacher!r}; teachers: {', '.join(teachers) or 'none'}")
        model_ref(p.student, f"{where}: pairs[{i}].student")
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

    stage_overrides = {}
    for stage, body in _mapping(raw.get("stage_overrides"), f"{where}: stage_overrides").items():
        if stage not in STAGES:
            _fail(f"{where}: stage_overrides.{stage}", f"unknown stage; stages: {', '.join(STAGES)}")
        stage_overrides[stage] = _overrides(body, f"{where}: stage_overrides.{stage}")

    resources = check_resources(raw.get("resources"), "resources", where)
    if not pairs and not baselines:
        _fail(where, "nothing to train: give `pairs` and/or `baselines`")
    return _section(SweepSpec, {
        "name": name, "datasets": datasets, "models": models, "teachers": teachers, "pairs": pairs,
        "baselines": baselines, "seeds": raw.get("seeds", [0]), "teacher_seed": raw.get("teacher_seed"),
        "runs_dir": raw.get("runs_dir", "runs"), "overrides": _overrides(raw.get("overrides"), f"{where}: overrides"),
        "stage_overrides": stage_overrides, "resources": resources}, where, "")


def check_resources(data: Any, at: str = "resources", where: str = "<mapping>") -> Resources:
    """A ``resources`` section (a mapping, or Resources changed by command-line flags) checked, ``per_stage``
    included: each stage's resources as :meth:`Resources.for_stage` will make them."""
    if isinstance(data, Resources):
        data = dataclasses.asdict(data)
    r = _section(Resources, data, where, at)
    for stage, extra in r.per_stage.items():
        _section(Resources, {**dataclasses.asdict(r), "per_stage": {}, **_mapping(extra, f"{where}: {at}.per_stage."
                                                                                          f"{stage}")},
                 where, f"{at}.per_stage.{stage}")
    return r
