#!/usr/bin/env python
"""CPU training-step time of fp32 vs bf16 autocast (the reason `lakd train` warns about bf16 on CPU).

One model (``lakd.models.build_model``, same seed), one fixed batch, CE loss, SGD: forward, backward, step.
The two precisions run interleaved in blocks (fp32, bf16, fp32, ...) so that load from other programs hits
both alike; the reported ratio is the median over blocks of bf16 block time / the fp32 block just before it.

Usage: python benchmarks/bench_precision.py [--width 0.25] [--crop 64] [--batch 4] [--steps 3] [--blocks 3]
       [--threads 1]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lakd.models import build_model  # noqa: E402


def block(model, opt, x, y, steps: int, bf16: bool) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            logits = model(x).logits
        loss = F.cross_entropy(F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear",
                                             align_corners=True), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_model("deeplabv3", "resnet18", 8, 3, width=a.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 3, a.crop, a.crop)
    y = torch.randint(0, 8, (a.batch, a.crop, a.crop))
    block(model, opt, x, y, 1, False), block(model, opt, x, y, 1, True)  # warm-up
    fp32, bf16 = [], []
    for _ in range(a.blocks):
        fp32.append(block(model, opt, x, y, a.steps, False))
        bf16.append(block(model, opt, x, y, a.steps, True))
    ratio = statistics.median(b / f for f, b in zip(fp32, bf16))
    print(f"{'precision':<10} {'s/step (median)':>16}")
    print(f"{'fp32':<10} {statistics.median(fp32):16.3f}\n{'bf16':<10} {statistics.median(bf16):16.3f}")
    print(f"bf16 / fp32 = {ratio:.1f}x")
    print(json.dumps({"fp32_s_per_step": statistics.median(fp32), "bf16_s_per_step": statistics.median(bf16),
                      "ratio": ratio, **vars(a), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
