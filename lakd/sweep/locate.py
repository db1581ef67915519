"""Find a sweep on disk and build its plan again, from any directory (``lakd sweep status|collect [PATH]``).

A sweep directory holds ``.sweep/plan.json`` (written before its first job is submitted or run) and
``.sweep/source.json``, the recipe of its plan: the sweep file's contents, ``--runs-dir``, the ``--set``
overrides and the directory the launcher ran in (relative paths of the sweep file are taken from there).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from lakd.sweep.plan import Plan
from lakd.sweep.spec import SweepSpec, load_spec, resolve_source

PLAN_FILE = Path(".sweep") / "plan.json"
SOURCE_FILE = Path(".sweep") / "source.json"


def spec_of(sweep: Union[str, Path, dict], runs_dir: Optional[str] = None, set_items: tuple = ()) -> SweepSpec:
    """The sweep ``sweep`` (name, file or mapping) with ``--runs-dir`` and ``--set KEY=VALUE`` applied."""
    from lakd.config import ConfigError, parse_override

    spec = load_spec(sweep, {"runs_dir": runs_dir} if runs_dir else None)
    for item in set_items:
        try:
            key, value = parse_override(item)  # lakd train's parser
        except ConfigError:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.iters=1000") from None
        spec.overrides[key] = value
    return spec


def recipe(sweep: Union[str, Path], runs_dir: Optional[str] = None, set_items: tuple = (),
           cwd: Optional[Path] = None) -> dict:
    """What ``.sweep/source.json`` records: enough to call :func:`spec_of` again anywhere."""
    path = resolve_source(sweep)
    return {"sweep": yaml.safe_load(path.read_text()), "file": str(path.resolve()), "runs_dir": runs_dir,
            "set": list(set_items), "cwd": str(cwd or Path.cwd())}


def has_sweep(sweep_dir: Path) -> bool:
    return (Path(sweep_dir) / PLAN_FILE).is_file()


def find_sweep_dir(start: Union[str, Path]) -> Optional[Path]:
    """``start`` or the nearest folder above it that holds a sweep; None when there is none."""
    path = Path(os.path.abspath(start))
    for d in (path, *path.parents):
        if has_sweep(d):
            return d
    return None


def plan_at(sweep_dir: Path, sweep: Optional[Union[str, Path]] = None, **resources: Any) -> Plan:
    """The plan of the sweep in ``sweep_dir``, built from its recorded recipe. A sweep recorded without one
    (an older lakd, or run through the Python API) is built from ``sweep`` or the name in its plan.json."""
    from lakd.sweep import make_plan

    source = Path(sweep_dir) / SOURCE_FILE
    if source.is_file():
        rec = json.loads(source.read_text())
        spec = spec_of(rec["sweep"], rec.get("runs_dir"), tuple(rec.get("set") or ()))
        return make_plan(spec, sweep_dir=sweep_dir, cwd=rec.get("cwd"), source=rec, **resources)
    name = json.loads((Path(sweep_dir) / PLAN_FILE).read_text()).get("sweep")
    spec = spec_of(sweep or name)
    if spec.name != name:
        raise ValueError(f"the sweep in {sweep_dir} is {name!r}, not {spec.name!r}: pass its sweep file with --sweep")
    return make_plan(spec, sweep_dir=sweep_dir, **resources)
