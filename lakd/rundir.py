"""The run directory of a stage, named in one place: every file a stage writes, and typed readers for them.

Layout (``<runs_dir>/<run name>/<stage>/``, one folder per stage of a run)::

    config.yaml              the resolved config the stage was trained with (plain YAML; never runs code)
    deepspeed_config.json    the DeepSpeed config it resolved to
    result.json              the final evaluation; its presence means "stage finished"
    metrics.jsonl            one JSON object per logged step and per evaluation (lakd.engine.progress)
    console.log              the console of rank 0 (launchers do not keep it)
    .lock                    one job per stage folder (lakd.engine.runlock)
    checkpoints/             lakd.engine.checkpoint: step_<n>/ tag folders and the ``latest`` pointer
    tensorboard/             when log.tensorboard is on
    <stage>.safetensors/.json    the final export (lakd.models.export), handed to the next stage
    <stage>-best.safetensors/.json  the export of the best evaluation, when periodic evaluation keeps it

API (engine, sweep, report and commands use these names rather than spelling file names):

- ``StageDir(path)``; ``StageDir.at(runs_dir, run_name, stage)``; ``StageDir.of(cfg)`` (a ``lakd.config.Config``).
- paths: ``.result``, ``.metrics``, ``.config``, ``.deepspeed_config``, ``.console_log``, ``.lock``,
  ``.checkpoints``, ``.latest_pointer``, ``.tensorboard``; exports ``.export`` / ``.best_export`` (the base
  ``<p>`` that ``save_export`` / ``load_export`` take) and ``.export_weights`` / ``.best_export_weights`` (the
  ``.safetensors`` files); ``.stage`` (the folder name), ``.run_dir``, ``.run_name``.
- state: ``.finished`` (a result.json is there), ``latest_checkpoint_tag()`` (None without a complete checkpoint).
- readers: ``read_result()`` (a dict; :class:`ResultError`, a ValueError naming the file, when it is missing,
  partial or not a stage result), ``read_config()`` (plain data, {} when missing or unreadable),
  ``metrics_records()`` (the parsable records of metrics.jsonl; a line cut by a kill is skipped).

This module sits beside ``lakd.config`` at the bottom of the package: it imports nothing of lakd at module level,
so every layer may use it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

if TYPE_CHECKING:
    from lakd.config import Config

__all__ = ["StageDir", "ResultError", "metrics_records", "RESULT", "METRICS", "CONFIG", "CHECKPOINTS", "LATEST"]

RESULT = "result.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
DEEPSPEED_CONFIG = "deepspeed_config.json"
CONSOLE_LOG = "console.log"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
LATEST = "latest"  # DeepSpeed's pointer file name inside checkpoints/ (lakd.engine.checkpoint.LATEST)
TENSORBOARD = "tensorboard"
BEST_SUFFIX = "-best"


class ResultError(ValueError):
    """A result.json that cannot be used: missing, cut short, not JSON or not a stage result (names the file)."""


@dataclass(frozen=True)
class StageDir:
    """One stage's folder ``<runs_dir>/<run name>/<stage>/`` and the files in it (see the module docstring)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def at(cls, runs_dir: str | os.PathLike, run_name: str, stage: str) -> "StageDir":
        return cls(Path(runs_dir) / run_name / stage)

    @classmethod
    def of(cls, cfg: "Config") -> "StageDir":
        """The stage folder a config trains into."""
        return cls.at(cfg.run.runs_dir, cfg.run.name, cfg.stage)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    # ---- names ----------------------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        return self.path.name

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def run_name(self) -> str:
        return self.path.parent.name

    @property
    def result(self) -> Path:
        return self.path / RESULT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def deepspeed_config(self) -> Path:
        return self.path / DEEPSPEED_CONFIG

    @property
    def console_log(self) -> Path:
        return self.path / CONSOLE_LOG

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def latest_pointer(self) -> Path:
        return self.checkpoints / LATEST

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def export(self) -> Path:
        """Base ``<p>`` of the final export (``<p>.safetensors`` + ``<p>.json``)."""
        return self.path / self.stage

    @property
    def best_export(self) -> Path:
        return self.path / f"{self.stage}{BEST_SUFFIX}"

    @property
    def export_weights(self) -> Path:
        return self.export.with_name(self.export.name + ".safetensors")

    @property
    def best_export_weights(self) -> Path:
        return self.best_export.with_name(self.best_export.name + ".safetensors")

    # ---- state and readers ----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.result.is_file()

    def latest_checkpoint_tag(self) -> Optional[str]:
        """The tag ``latest`` points at (the newest complete checkpoint), None without one."""
        try:
            tag = self.latest_pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return tag or None

    def read_result(self) -> dict[str, Any]:
        """The stage's result.json as a dict; :class:`ResultError` naming the file and what is wrong."""
        path = self.result
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ResultError(f"{path}: no {RESULT} (stage not finished?)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ResultError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            cut = " (cut short: a partial write?)" if exc.pos >= len(text.rstrip()) else ""
            raise ResultError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}){cut}; remove it to "
                              "evaluate the stage again") from None
        if not isinstance(data, dict) or "eval" not in data:
            raise ResultError(f"{path}: not a stage result (no 'eval' entry)")
        return data

    def read_config(self) -> dict[str, Any]:
        """The saved config.yaml as plain data ({} when missing, unreadable or not a mapping); never runs code."""
        import yaml

        try:
            cfg = yaml.safe_load(self.config.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {}
        return cfg if isinstance(cfg, dict) else {}

    def metrics_records(self) -> Iterator[dict[str, Any]]:
        """Every record of the stage's metrics.jsonl (:func:`metrics_records`)."""
        return metrics_records(self.metrics)


def metrics_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every parsable record with a ``step`` of a metrics.jsonl (none when the file is missing). A line cut
    by a kill, or anything else that is not a JSON object, is skipped."""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec:
                yield rec
