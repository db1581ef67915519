"""`lakd eval EXPORT --shards MANIFEST`: evaluate an exported model, print a per-class table, write JSON/PNGs.

A label-assisted model (export ``label_channels > 0``) is evaluated with its privileged input (``fixed``: the
fixed, evenly spaced label code of distillation time), without it (``zero``: zeros in the label channels), or
both (the default). Results use the stage-output keys: ``eval.label`` (fixed code) and ``eval.image``
(zero channel, or the plain image for image-only models).

Runs on several ranks under any launcher `lakd train` knows (torchrun, srun, submitit, MPI; see
lakd.engine.distributed): each rank evaluates its part of the set and the confusion matrices are summed;
rank 0 prints and writes the JSON. Every option and output folder is checked before inference starts.
A user's `folder` dataset is shown with the classes and colours of the card its shards were built with (the
manifest records the card file).
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path

from lakd.exit_codes import OK
from lakd.io import atomic_write_bytes

LABEL_INPUT_CHOICES = ("fixed", "zero", "both")


def register(subparsers) -> None:
    from lakd.commands._help import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "eval", help="evaluate an exported model on a shard manifest (mIoU, per-class IoU)",
        description="Evaluate an exported model (<p>.safetensors + <p>.json) on the images of a shard manifest: "
                    "per-class IoU table, JSON results, optional colourised prediction PNGs.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("export", help="export path (<p>, <p>.safetensors or <p>.json)")
    p.add_argument("--shards", required=True, help="manifest of the evaluation split (file or folder holding one)")
    p.add_argument("--mode", choices=("whole", "slide", "msflip"), default="whole",
                   help="inference mode (default whole, the reference protocol)")
    p.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="N",
                   help="sliding-window crop (H [W]); slide defaults to the training crop (export meta or the "
                        "dataset preset); optional for msflip")
    p.add_argument("--stride", type=int, nargs="+", default=None, metavar="N",
                   help="sliding-window stride (H [W]); default 2/3 of the crop")
    p.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                   help="msflip scales (default 0.5 0.75 1.0 1.25 1.5 1.75)")
    p.add_argument("--no-flip", action="store_true", help="msflip without the horizontal flip")
    p.add_argument("--label-input", choices=LABEL_INPUT_CHOICES, default=None,
                   help="label-assisted models: fixed label code, zero channel, or both (default both)")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--save-png", default=None, metavar="DIR",
                   help="write colourised predictions (dataset palette) to DIR")
    p.add_argument("--save-ids", default=None, metavar="DIR",
                   help="write raw class-id PNGs (train ids, the benchmark-submission format) to DIR")
    p.add_argument("--batch-size", type=int, default=1, help="images (or windows) per forward")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (per rank)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes (default 0)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="skip (and count) images of more than N pixels (default: 64e6, as data.max_pixels in training)")
    p.add_argument("--allow-pipe", action="store_true",
                   help="open the manifest's pipe:/URL shard entries (a pipe: entry runs a shell command)")
    p.set_defaults(func=run)


def _pair(v):
    if v is None:
        return None
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) == 2:
        return (v[0], v[1])
    raise ValueError("expects one or two numbers")


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(key)).strip("._") or "image"


def format_table(class_names: list[str], results: dict[str, dict]) -> str:
    """Per-class IoU table, one column per evaluation variant, then mIoU / aAcc / mAcc rows."""
    variants = list(results)
    width = max([10] + [len(n) for n in class_names])
    head = f"{'class':<{width}}  " + "  ".join(f"{v:>12}" for v in variants)
    lines = [head, "-" * len(head)]

    def cell(x):
        return f"{100 * x:12.2f}" if x is not None else f"{'-':>12}"

    for c, name in enumerate(class_names):
        lines.append(f"{name:<{width}}  " + "  ".join(cell(results[v]["iou"][c]) for v in variants))
    lines.append("-" * len(head))
    for key, title in (("miou", "mIoU"), ("miou_all", "mIoU (all C)"), ("acc", "aAcc"), ("macc", "mAcc")):
        lines.append(f"{title:<{width}}  " + "  ".join(cell(results[v][key]) for v in variants))
    return "\n".join(lines)


def _pick_device(device_arg, local_rank: int):
    """The torch device asked for (checked: a usable device or a one-line UsageError)."""
    import torch

    from lakd.cli import UsageError

    if device_arg is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count()) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        device = torch.device(device_arg)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device_arg}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device_arg}: lakd eval runs on cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device_arg}: torch sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device_arg}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def _init_distributed(device_arg):
    """(rank, world size, device) from the launcher's environment (the engine's detection)."""
    import torch

    from lakd.engine import distributed as D

    denv = D.detect()
    device = _pick_device(device_arg, denv.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = False
    if denv.world_size > 1:
        created = D.init_process_group(denv, device, with_deepspeed=False)
    return denv.rank, denv.world_size, device, created


def _check_args(args) -> None:
    from lakd.cli import UsageError

    for flag, values, low in (("--crop-size", args.crop_size, 1), ("--stride", args.stride, 1),
                              ("--batch-size", [args.batch_size], 1), ("--max-images", [args.max_images], 1),
                              ("--workers", [args.workers], 0), ("--max-pixels", [args.max_pixels], 1)):
        bad = [v for v in values or [] if v is not None and v < low]
        if bad:
            raise UsageError(f"{flag} must be >= {low}, got {bad[0]}")
    if args.scales is not None and not all(0 < s < float("inf") for s in args.scales):
        raise UsageError(f"--scales must be positive numbers, got {' '.join(map(str, args.scales))}")


def _check_outputs(args, variants) -> None:
    """Every file and folder this run will write can be written: checked before inference."""
    from lakd.cli import UsageError
    from lakd.io import unreplaceable_reason, unwritable_reason

    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise UsageError(f"--out {out}: is a folder; give a file name for the JSON")
        reason = unwritable_reason(out.parent) or unreplaceable_reason(out)
        if reason:
            raise UsageError(f"--out {out}: {reason}")
    for flag, root in (("--save-png", args.save_png), ("--save-ids", args.save_ids)):
        if not root:
            continue
        for name in variants:
            folder = Path(root) / (name if len(variants) > 1 else "")
            reason = unwritable_reason(folder)
            if reason:
                raise UsageError(f"{flag} {root}: {reason}")


def run(args) -> int:
    from lakd.cli import UsageError
    from lakd.data.manifest import load_manifest

    try:
        crop = _pair(args.crop_size)
        stride = _pair(args.stride)
    except ValueError as exc:
        raise UsageError(f"--crop-size/--stride {exc}") from None
    _check_args(args)
    try:
        manifest = load_manifest(args.shards, allow_pipe=args.allow_pipe)
        manifest.shard_urls()  # refuses pipe:/URL entries the user did not allow
    except (ValueError, OSError) as exc:
        raise UsageError(f"--shards: {exc}".replace("data.allow_pipe=true (lakd train) or ", "")) from None
    rank, world, device, created = _init_distributed(args.device)
    try:
        return _evaluate(args, manifest, crop, stride, rank, world, device)
    finally:
        if created:
            from lakd.engine import distributed as D

            D.destroy_process_group()


def _evaluate(args, manifest, crop, stride, rank, world, device) -> int:
    from lakd.cli import UsageError
    from lakd.commands._dataset_card import FOLDER, recorded_card, use_folder_card
    from lakd.data.cards import get_card
    from lakd.data.pipeline import build_eval_loader
    from lakd.engine.progress import track
    from lakd.evaluation.evaluate import evaluate, label_input_fn
    from lakd.models.export import load_export

    try:
        model, meta = load_export(args.export, map_location=device)
    except (ValueError, OSError) as exc:
        raise UsageError(f"export: {exc}") from None
    num_classes = int(meta["num_classes"])
    if int(manifest.num_classes) != num_classes:
        raise UsageError(f"the export predicts {num_classes} classes but {manifest.dataset} has "
                         f"{manifest.num_classes}")
    if manifest.dataset == FOLDER:  # a user's dataset: the card its shards were built with
        note = use_folder_card([recorded_card(manifest), meta.get("card")], num_classes)
        if note and rank == 0:
            print(f"lakd eval: note: {note}", file=sys.stderr)
    try:
        card = get_card(manifest.dataset)
        class_names, palette_card = list(card.class_names), card
    except ValueError:
        class_names, palette_card = [f"class_{c}" for c in range(num_classes)], None

    if args.mode == "slide" and crop is None:
        crop = _default_crop(meta, manifest.dataset)
        if crop is None:
            raise UsageError("--mode slide needs --crop-size (no training crop size known for this export)")
        if rank == 0:
            print(f"lakd eval: sliding window with the training crop {crop[0]}x{crop[1]}", file=sys.stderr)
    label_channels = int(meta.get("label_channels", 0))
    variants: dict[str, object] = {}
    if label_channels > 0:
        from lakd.engine.teacher_export import noiser_from_meta

        try:  # the export's own settings; one written without them gets LabelNoiser's defaults, with a note
            noiser = noiser_from_meta(meta, args.export, default_noise={})
        except ValueError as exc:
            raise UsageError(f"export: {exc}") from None
        if meta.get("noise", meta.get("label_noise")) is None and rank == 0:
            print(f"lakd eval: note: the export has no label_noise settings; using {noiser}", file=sys.stderr)
        choice = args.label_input or "both"
        if choice in ("fixed", "both"):
            variants["label"] = label_input_fn(noiser, "fixed")
        if choice in ("zero", "both"):
            variants["image"] = label_input_fn(noiser, "zeros")
    else:
        if args.label_input == "fixed":
            raise UsageError("--label-input fixed: this model takes no label channel (label_channels = 0)")
        variants["image"] = None

    _check_outputs(args, variants)
    mean, std = meta.get("mean"), meta.get("std")
    kwargs = {} if mean is None else {"mean": mean, "std": std}
    if args.max_pixels is not None:
        kwargs["max_pixels"] = args.max_pixels
    loader = build_eval_loader(manifest, rank=rank, world_size=world, num_workers=args.workers, **kwargs)

    results: dict[str, dict] = {}
    for name, input_fn in variants.items():
        writers = []
        for root, card in ((args.save_png, palette_card), (args.save_ids, None)):
            if root:
                out_dir = Path(root) / (name if len(variants) > 1 else "")
                out_dir.mkdir(parents=True, exist_ok=True)
                writers.append(_png_writer(out_dir, card))
        on_pred = (lambda *a: [w(*a) for w in writers]) if writers else None
        scales = args.scales
        flip = False if args.no_flip else None
        total = len(loader) if args.max_images is None else min(len(loader), max(args.max_images, 0))
        shown = track(loader, total=total, desc=f"lakd eval [{name}]", unit="images", enabled=rank == 0)
        results[name] = evaluate(model, shown, num_classes, input_fn=input_fn, mode=args.mode, crop_size=crop,
                                 stride=stride, scales=scales, flip=flip, device=device,
                                 batch_size=args.batch_size, on_prediction=on_pred, max_images=args.max_images)
        if not results[name]["pixels"]:  # summed over ranks: every rank takes the same decision
            raise UsageError(f"no readable labelled image in {args.shards} (missing, empty or corrupt shards; "
                             f"lakd shards verify {args.shards}); a score over nothing is not a result")
    from lakd.engine.trainer import data_counts, sum_over_ranks

    skipped = sum_over_ranks(data_counts(loader), device)  # of the last pass (every pass reads the same images)
    if rank == 0 and any(skipped.values()):
        print(f"lakd eval: warning: skipped {skipped['corrupt']} corrupt image(s) and "
              f"{skipped['truncated_shards']} unreadable shard read(s); the scores leave them out "
              f"(lakd shards verify {args.shards})", file=sys.stderr)
    if rank == 0:
        titles = {"label": "with label", "image": "zero label" if label_channels > 0 else "image"}
        print(f"{meta['model'].get('name')}-{meta['model'].get('backbone')} on {manifest.dataset}/{manifest.split} "
              f"({results[next(iter(results))]['pixels']} labelled pixels, mode {args.mode})")
        print(format_table(class_names, {titles[k]: v for k, v in results.items()}))
        if args.out:
            doc = {"export": str(args.export), "shards": str(args.shards), "dataset": manifest.dataset,
                   "split": manifest.split, "mode": args.mode, "crop_size": crop, "stride": stride,
                   "scales": args.scales, "flip": not args.no_flip if args.mode == "msflip" else False,
                   "label_channels": label_channels, "class_names": class_names, "eval": results,
                   "data": skipped}
            _write_json(Path(args.out), doc)
            print(f"wrote {args.out}")
    return OK


def _default_crop(meta: dict, dataset: str):
    """The export's training crop (meta ``crop_size``), else the dataset preset's ``data.crop_size``."""
    from lakd.config import ConfigError, load_config

    crop = meta.get("crop_size")
    if crop is None:
        try:
            crop = load_config(dataset).data.crop_size
        except ConfigError:
            return None
    try:
        return _pair([int(c) for c in (crop if isinstance(crop, (list, tuple)) else [crop])])
    except (TypeError, ValueError):
        return None


def _png_writer(out_dir: Path, card):
    import numpy as np
    from PIL import Image

    def write(keys, pred, label):
        for key, p in zip(keys, pred.numpy()):
            if card is not None:
                img = Image.fromarray(card.colorize(p.astype(np.uint8)))
            else:
                img = Image.fromarray(p.astype(np.uint8), mode="L")
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic_write_bytes(out_dir / f"{_safe_name(key)}.png", buf.getvalue())

    return write


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
