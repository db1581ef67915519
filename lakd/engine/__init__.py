"""Training engine: DeepSpeed-wrapped stages, shared checkpoints, exact resume, preemption.

Entry point: :func:`lakd.engine.stage.run_stage` (``lakd train`` calls it). Modules: ``environment``
(every check before the first write), ``runlock`` (one job per stage folder), ``distributed`` (launcher
detection, process group), ``ds_engine`` (DeepSpeed config/engine), ``trainer`` (the loop), ``checkpoint``
(shared checkpoint directory), ``preemption`` (signals), ``batchnorm``, ``rng``, ``state_io``, ``progress``
(metrics.jsonl + progress display).
"""
