"""`lakd models`: list the model registry with parameter counts and FLOPs at a given input size."""
from __future__ import annotations

import json

from lakd.exit_codes import OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the segmentation models (model x backbone) with parameters and FLOPs",
        description="List every registered (model, backbone) pair with its parameter count and the FLOPs of one "
                    "inference forward pass (eval mode, batch 1, torch.utils.flop_counter: a multiply-add is "
                    "2 FLOPs). Nothing is allocated: models are built on the meta device.")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), default=[512, 512],
                   help="input height and width for the FLOP count (default: 512 512)")
    p.add_argument("--num-classes", type=int, default=19, metavar="N", help="output classes (default: 19)")
    p.add_argument("--in-channels", type=int, default=3, metavar="C",
                   help="input channels: 3 for images, 3 + k for a label-assisted teacher (default: 3)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default: 1.0)")
    p.add_argument("--model", action="append", metavar="NAME", help="only this model (repeatable)")
    p.add_argument("--backbone", action="append", metavar="NAME", help="only this backbone (repeatable)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    p.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from lakd.cli import UsageError
    from lakd.models.profile import profile_model
    from lakd.models.registry import COMBINATIONS, list_backbones, list_models

    h, w = args.input_size
    if h < 1 or w < 1:
        raise UsageError(f"--input-size must be two positive integers, got {h} {w}")
    if args.num_classes < 2:
        raise UsageError(f"--num-classes must be >= 2, got {args.num_classes}")
    if args.in_channels < 1:
        raise UsageError(f"--in-channels must be >= 1, got {args.in_channels}")
    if not 0 < args.width <= 4:
        raise UsageError(f"--width must be in (0, 4], got {args.width}")
    for m in args.model or []:
        if m not in list_models():
            raise UsageError(f"unknown model {m!r}; valid models: {', '.join(list_models())}")
    for b in args.backbone or []:
        if b not in list_backbones():
            raise UsageError(f"unknown backbone {b!r}; valid backbones: {', '.join(list_backbones())}")
    pairs = [(m, b) for m in list_models() for b in COMBINATIONS[m]
             if (not args.model or m in args.model) and (not args.backbone or b in args.backbone)]
    if not pairs:
        valid = "; ".join(m + ": " + ", ".join(COMBINATIONS[m]) for m in list_models())
        raise UsageError(f"no registered model matches --model/--backbone ({valid})")

    rows = []
    for m, b in pairs:
        try:
            prof = profile_model(m, b, num_classes=args.num_classes, in_channels=args.in_channels,
                                 input_size=(h, w), width=args.width, flops=not args.no_flops)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        rows.append(prof)
        if args.json:
            print(json.dumps(prof.as_dict()), flush=True)
    if args.json:
        return OK
    print(f"lakd models: {args.num_classes} classes, {args.in_channels} input channels, width {args.width:g}, "
          f"FLOPs for one {h}x{w} image (eval mode; multiply-add = 2 FLOPs)")
    header = f"{'model':<10} {'backbone':<12} {'params (M)':>11} {'GFLOPs':>9} {'logits':>11} {'aux':>4}"
    print(header)
    print("-" * len(header))
    for r in rows:
        gflops = "-" if r.flops is None else f"{r.flops / 1e9:.2f}"
        out = f"{r.output_size[0]}x{r.output_size[1]}"
        print(f"{r.name:<10} {r.backbone:<12} {r.params / 1e6:>11.3f} {gflops:>9} {out:>11} "
              f"{'yes' if r.aux else 'no':>4}")
    return OK
