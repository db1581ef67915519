"""Typed training configuration: dataclasses, YAML presets, dotted ``key=value`` overrides.

A configuration is built in three layers, each a plain dict merged onto the one before:

1. the dataclass defaults of ``sections`` (the paper's common settings: SGD momentum 0.9, weight decay 1e-4,
   poly 0.9, global batch 16, DeepLabV3-ResNet18, ...);
2. a YAML file: a preset name (``lakd/presets/<name>.yaml``, e.g. ``cityscapes`` or ``synthetic``) or a
   path; a file may start from a preset with ``base: <preset>``;
3. dotted overrides ``train.iters=100 data.crop_size=[64,64] teacher.export=null`` (values are YAML; the
   sweep files' ``overrides`` are read by the same :func:`parse_override` / :func:`nest_overrides`).

The merged dict is then validated into :class:`Config` (pydantic dataclasses): every check sits next to its
field, as a constraint of its type (``values``) or in its section's ``__post_init__`` (``sections``); names of
components are checked against the registries that build them (models, dataset cards, losses, optimizers,
evaluation modes). Any problem raises one :class:`ConfigError` line naming the key (``errors``), before
anything is written anywhere. Loading and merging: ``load``; the override parser: ``overrides``.
``teacher.model`` is a *partial* model section merged onto ``model`` (empty = the teacher-stage model has the
same architecture as the student). Relative paths are made absolute so a resolved config works from any
directory (Slurm jobs start elsewhere).
"""
from lakd.config.errors import ConfigError
from lakd.config.load import (PRESETS_DIR, build_config, config_from_yaml_text, list_presets, load_config, read_yaml,
                              validate)
from lakd.config.overrides import (dotted_overrides, format_value, merge, nest_overrides, parse_override,
                                   parse_overrides, parse_value)
from lakd.config.sections import (STAGES, CheckpointConfig, Config, DataConfig, DistConfig, EvalConfig, LogConfig,
                                  ModelConfig, NoiseConfig, OptimConfig, RunConfig, StudentLossConfig,
                                  TeacherConfig, TeacherLossConfig, TrainConfig, batch_layout)

__all__ = ["PRESETS_DIR", "STAGES", "CheckpointConfig", "Config", "ConfigError", "DataConfig", "DistConfig",
           "EvalConfig", "LogConfig", "ModelConfig", "NoiseConfig", "OptimConfig", "RunConfig", "StudentLossConfig",
           "TeacherConfig", "TeacherLossConfig", "TrainConfig", "batch_layout", "build_config",
           "config_from_yaml_text", "dotted_overrides", "format_value", "list_presets", "load_config", "merge",
           "nest_overrides", "parse_override", "parse_overrides", "parse_value", "read_yaml", "validate"]
