#!/usr/bin/env python
"""Training-step benchmark: one step of lakd's engine vs a bare PyTorch loop, same model/batch/loss/optimizer.

- `bare`: ``model`` (the same DeepLabV3 built by ``lakd.models.build_model``, same seed), a fixed batch
  already on the device, the same loss (``lakd.method.objectives.StudentObjective``: CE + 0.02 aux CE), the
  same optimizer (``lakd.optim.build_optimizer`` SGD) and poly ``LambdaLR``: forward, backward, step,
  zero_grad, scheduler step. Nothing else.
- `lakd`: ``lakd.engine.trainer.Trainer.fit`` as ``lakd train --stage baseline`` runs it: the DeepSpeed
  engine, the streaming shard loader (``data.num_workers`` worker processes, decode + augment), the
  per-step agreement on preemption / NaN (with the loss-term read-back), ``metrics.jsonl`` and the plain
  progress line every step.

Both run in one process, interleaved in blocks (bare, lakd, bare, lakd, ...) so that load from other
programs hits both alike; the per-step time of each is the median over blocks of (block time / steps),
lakd's taken from the ``metrics.jsonl`` time stamps (checkpoint writing at block ends excluded); the
reported ratio is the median over blocks of lakd block / the bare block just before it. Compute
uses ``--threads`` threads on both sides; on a CPU, leave a core free for the loader worker.

Prints a table and a JSON line; ``--json PATH`` also writes it (default benchmarks/results/bench_step.json).
``benchmarks/gpu.py`` runs it for DeepLabV3-R18 and PSPNet-R18, bf16, 512x1024, batch 8 on a GPU.
Usage: python benchmarks/bench_step.py [--device cpu|cuda] [--model deeplabv3] [--backbone resnet18]
       [--width 0.5] [--crop 128 | --crop 512,1024] [--batch 8] [--steps 10] [--blocks 5] [--workers 1]
       [--threads 1] [--precision fp32|bf16]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import shutil
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_shards(root: Path, image_size: int, samples: int) -> Path:
    from lakd.data import build_shards as build

    out = root / "shards"
    workers = max(1, min(8, os.cpu_count() or 1))  # 1024 px synthetic scenes take about a second each
    build("synthetic", "train", out, samples_per_shard=32, workers=workers, progress=False, num_samples=samples,
          image_size=image_size, seed=0)
    build("synthetic", "val", out, samples_per_shard=8, workers=1, progress=False, num_samples=4,
          image_size=image_size, seed=0)
    return out


def parse_crop(text: str) -> tuple[int, int]:
    """"96" -> (96, 96); "512,1024" -> (512, 1024)."""
    parts = [int(v) for v in str(text).replace("x", ",").split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"crop must be N or H,W with positive sizes, got {text!r}")
    return parts[0], parts[1]


def make_config(args, shards: Path, runs: Path):
    from lakd.config import load_config

    ch, cw = args.crop
    over = [f"data.shards_dir={shards}", f"run.runs_dir={runs}", "run.name=bench",
            f"model.name={args.model}", f"model.backbone={args.backbone}",
            f"model.width={args.width}", f"data.crop_size=[{ch},{cw}]",
            f"train.batch_size={args.batch}", f"train.iters={args.steps}", "eval.every=0",
            f"checkpoint.every={10**9}", "checkpoint.keep_last=1", "log.every=1", "log.print_every=1",
            "log.progress=plain",
            f"data.num_workers={args.workers}", f"train.precision={args.precision}", f"train.device={args.device}"]
    return load_config("synthetic", over, stage="baseline")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--model", default="deeplabv3", help="lakd model name (deeplabv3, pspnet, ...)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--crop", type=parse_crop, default=(128, 128), help="N or H,W")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--workers", type=int, default=1, help="loader worker processes of the lakd side")
    p.add_argument("--threads", type=int, default=1, help="torch compute threads (CPU)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--fixed-batch", action="store_true",
                   help="diagnostic: feed lakd's loop the bare loop's fixed batch (isolates the engine from the loader)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "bench_step.json"))
    return p.parse_args(argv)


def measure(args) -> dict:
    """Run both loops side by side (see the module docstring) and return the result dict."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SUBMITIT_EXECUTOR"):
        os.environ.pop(key, None)

    from lakd.engine import distributed as D
    from lakd.engine.assemble import assemble, build_model
    from lakd.engine.callbacks import Callback
    from lakd.engine.ds_engine import poly_factor, prepare_deepspeed
    from lakd.engine.preemption import PreemptionFlag
    from lakd.engine.progress import MetricsLog, Progress
    from lakd.engine.trainer import Trainer, TrainState, autocast_context
    from lakd.optim import build_optimizer

    tmp = Path(tempfile.mkdtemp(prefix="lakd-bench-step-"))
    shards = build_shards(tmp, image_size=max(64, *args.crop), samples=max(64, 4 * args.batch))
    cfg = make_config(args, shards, tmp / "runs")
    denv = D.detect()
    device = D.pick_device(denv, cfg.train.device)
    prepare_deepspeed(device)
    D.init_process_group(denv, device)

    # ---- lakd side: the stage exactly as run_stage assembles it
    stage = assemble(cfg, denv, device)
    engine, objective, loader = stage.engine, stage.objective, stage.loader
    stage_dir = cfg.stage_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(stage_dir / "metrics.jsonl")
    progress = Progress(total=10**9, start=0, desc="bench", mode="plain", print_every=1,
                        stream=open(os.devnull, "w"))
    # time what lakd does around the model step (loader hand-off, agreement + read-back, logging), directly
    overhead = {"loader": 0.0, "agree": 0.0, "log": 0.0}

    class TimeAgreement(Callback):
        """From this rank's step being computed to every rank agreeing on it (the loss read-back included)."""

        def on_step_computed(self, trainer, step, values):
            self.t0 = time.perf_counter()

        def on_step_end(self, trainer, step, loss, terms):
            overhead["agree"] += time.perf_counter() - self.t0

    trainer = Trainer(cfg, engine=engine, scheduler=stage.scheduler, objective=objective, loader=loader,
                      device=device, accum=stage.accum, ckpt=stage.checkpoints,
                      evaluate=lambda n: None, average_bn=False, metrics=metrics, progress=progress,
                      flag=PreemptionFlag(), state=TrainState(), callbacks=[TimeAgreement()])

    class _Timed:
        def __init__(self, inner, key):
            self.inner, self.key = inner, key

        def __next__(self):
            t0 = time.perf_counter()
            try:
                return next(self.inner)
            finally:
                overhead[self.key] += time.perf_counter() - t0

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def timed(fn, key):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                overhead[key] += time.perf_counter() - t0
        return wrapper

    if args.fixed_batch:
        class _Repeat:
            def __next__(self):
                return dict(batch)

            def state_dict(self):
                return {}

        trainer.loader = _Timed(_Repeat(), "loader")
    else:
        trainer.loader = _Timed(loader, "loader")
    metrics.write = timed(metrics.write, "log")
    progress.update = timed(progress.update, "log")

    # ---- bare side: same architecture and init, same batch, loss, optimizer, schedule
    bare_model = build_model(cfg, 3)[0].to(device)  # (model, load report)
    bare_model.load_state_dict(engine.module.state_dict())
    bare_model.train()
    opt = build_optimizer(bare_model.parameters(), name="sgd", lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_factor(cfg))
    first = stage.loaders()
    batch = {k: v.to(device) for k, v in next(first).items() if isinstance(v, torch.Tensor)}
    first.close()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare_block(n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            with autocast_context(device, cfg.train.precision):
                out = objective(bare_model, batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        sync()
        return (time.perf_counter() - t0) / n

    def lakd_block(n: int) -> float:
        start = trainer.state.step
        cfg.train.iters = start + n
        trainer.fit()
        times = [json.loads(line)["time"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
        times = times[start:start + n]
        return (times[-1] - times[0]) / (n - 1)

    n = max(3, args.steps)
    bare_block(2)  # warm-up (allocator, first-call costs)
    lakd_block(3)
    overhead.update(loader=0.0, agree=0.0, log=0.0)
    bare_t, lakd_t = [], []
    for _ in range(args.blocks):
        bare_t.append(bare_block(n))
        lakd_t.append(lakd_block(n))
    loader.close()
    metrics.close()
    D.destroy_process_group()
    shutil.rmtree(tmp, ignore_errors=True)

    bare_s, lakd_s = statistics.median(bare_t), statistics.median(lakd_t)
    # each lakd block against the bare block just before it: both saw nearly the same machine load
    ratio = statistics.median(lt / bt for bt, lt in zip(bare_t, lakd_t))
    timed_steps = n * args.blocks
    parts_ms = {k: round(1000 * v / timed_steps, 3) for k, v in overhead.items()}
    res = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "host": platform.node(), "cpus": os.cpu_count(), "threads": args.threads,
        "model": f"{args.model}-{args.backbone} width {args.width}", "crop": list(args.crop), "batch": args.batch,
        "precision": args.precision, "loader_workers": args.workers, "steps_per_block": n, "blocks": args.blocks,
        "bare_ms_per_step": round(1000 * bare_s, 2), "lakd_ms_per_step": round(1000 * lakd_s, 2),
        "bare_blocks_ms": [round(1000 * t, 2) for t in bare_t], "lakd_blocks_ms": [round(1000 * t, 2) for t in lakd_t],
        "lakd_side_ms_per_step": parts_ms, "lakd_side_pct_of_bare": round(100 * sum(parts_ms.values()) / 1000 / bare_s, 3),
        "bare_images_per_s": round(args.batch / bare_s, 2), "lakd_images_per_s": round(args.batch / lakd_s, 2),
        "notes": (["bf16 on a CPU: autocast to bfloat16 runs far slower than fp32 on most CPUs (about 40x "
                   "measured on the development machine); use --precision fp32 for CPU timings"]
                  if device.type == "cpu" and args.precision == "bf16" else []),
        "ratio_of_medians": round(lakd_s / bare_s, 4), "ratio": round(ratio, 4), "overhead_pct": round(100 * (ratio - 1), 2), "goal_overhead_pct": 5.0,
    }
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    res = measure(args)
    ratio = res["ratio"]
    print(f"{'loop':<6} {'ms/step (median)':>18}  blocks")
    print(f"{'bare':<6} {res['bare_ms_per_step']:>18.2f}  {res['bare_blocks_ms']}")
    print(f"{'lakd':<6} {res['lakd_ms_per_step']:>18.2f}  {res['lakd_blocks_ms']}")
    print(f"lakd / bare = {ratio:.3f} (median of paired blocks; ratio of medians {res['ratio_of_medians']:.3f}) "
          f"(overhead {res['overhead_pct']:+.1f}%, goal <= +5%) on {res['device']}, "
          f"{args.batch} x {args.crop[0]}x{args.crop[1]}, {res['model']}, {args.precision}")
    print(f"lakd's own work per step: {res['lakd_side_ms_per_step']} ms = {res['lakd_side_pct_of_bare']:.2f}% of a bare step "
          "(loader = waiting for the next batch)")
    for note in res["notes"]:
        print(f"note: {note}")
    print(json.dumps(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
