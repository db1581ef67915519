"""`lakd shards build|info|verify`: raw datasets -> WebDataset shards + manifest, and their summary."""
from __future__ import annotations

import sys
from pathlib import Path

from lakd.exit_codes import FAILED, OK


def register(subparsers) -> None:
    from lakd.commands._help import DefaultsHelpFormatter

    p = subparsers.add_parser("shards", help="build WebDataset shards from a raw dataset; inspect a manifest",
                              description="Build WebDataset tar shards + manifest from a raw dataset layout, "
                                          "or summarise / verify a manifest.")
    sub = p.add_subparsers(dest="shards_command", metavar="ACTION")

    from lakd.data.cards import FOLDER, NAMES

    b = sub.add_parser("build", help="convert one split of a raw dataset into shards",
                       formatter_class=DefaultsHelpFormatter)
    b.add_argument("dataset", choices=(*NAMES, FOLDER),
                   help="dataset name (see shards/README.md); folder: your own, described by --card")
    b.add_argument("--root", help="raw dataset folder (not needed for synthetic)")
    b.add_argument("--split", default="train", help="split to convert (default train; e.g. val; VOC: train_aug, val)")
    b.add_argument("--out", default="shards/out", help="output folder for shards and manifest (default shards/out)")
    b.add_argument("--workers", type=int, default=None, help="reader processes (default: min(8, CPUs))")
    b.add_argument("--samples-per-shard", type=int, default=None, help="samples per tar shard (default 256)")
    b.add_argument("--skip-bad", action="store_true", help="skip (and count) bad samples instead of failing")
    b.add_argument("--no-progress", action="store_true", help="no progress output")
    b.add_argument("--card", metavar="FILE", help="folder only: your dataset card (YAML or JSON: class names, "
                                                 "palette, raw id -> train id, ignore id, file layout)")
    g = b.add_argument_group("synthetic only")
    g.add_argument("--num-samples", type=int, default=None, help="samples to generate (default: train 2000, val 200)")
    g.add_argument("--image-size", type=int, default=None, help="image side in pixels (default 128)")
    g.add_argument("--seed", type=int, default=None, help="generator seed (default 0)")
    b.set_defaults(func=run_build)

    i = sub.add_parser("info", help="summarise a manifest")
    i.add_argument("manifest", help="manifest file (or folder holding one)")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=run_info)

    v = sub.add_parser("verify", help="check local shards against the manifest's sha256 checksums")
    v.add_argument("manifest", help="manifest file (or folder holding one)")
    v.add_argument("--no-progress", action="store_true", help="no progress output")
    v.set_defaults(func=run_verify)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_build(args) -> int:
    from lakd.cli import UsageError
    from lakd.data.build import DEFAULT_SAMPLES_PER_SHARD, build_shards
    from lakd.data.manifest import load_manifest
    from lakd.io import unwritable_reason

    for flag, value in (("--samples-per-shard", args.samples_per_shard), ("--workers", args.workers),
                        ("--num-samples", args.num_samples), ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    reason = unwritable_reason(Path(args.out))
    if reason:
        raise UsageError(f"--out: {reason}")
    opts = {}
    synthetic_opts = {"num_samples": args.num_samples, "image_size": args.image_size, "seed": args.seed}
    if args.dataset == "synthetic":
        opts = {k: v for k, v in synthetic_opts.items() if v is not None}
    elif any(v is not None for v in synthetic_opts.values()):
        raise UsageError("--num-samples/--image-size/--seed only apply to the synthetic dataset")
    if (args.card is None) == (args.dataset == "folder"):
        raise UsageError("--card FILE (your dataset card) is required for folder" if args.card is None
                         else "--card only applies to the folder dataset")
    if args.card is not None:
        from lakd.data.user_card import use_card_file

        try:
            use_card_file(args.card)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        opts = {"card": str(Path(args.card).resolve())}
    try:
        path = build_shards(args.dataset, args.split, args.out, args.root,
                            samples_per_shard=DEFAULT_SAMPLES_PER_SHARD if args.samples_per_shard is None
                            else args.samples_per_shard,
                            workers=args.workers, skip_bad=args.skip_bad,
                            progress=False if args.no_progress else None, **opts)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    m = load_manifest(path)
    print(f"wrote {m.total} samples in {len(m.shards)} shards ({m.skipped} skipped) -> {path}")
    return OK


def brace_url(urls: list[str]) -> str:
    """One URL for all shards in the brace notation plain webdataset expands (``a-{000000..000007}.tar``)."""
    import os
    import re

    if len(urls) <= 1:
        return urls[0] if urls else ""
    parts = [re.fullmatch(r"(.*?)(\d+)(\D*)", u) for u in urls]
    if all(parts):
        heads, nums, tails = zip(*(p.groups() for p in parts))
        width = len(nums[0])
        values = [int(n) for n in nums]
        if (len(set(heads)) == 1 and len(set(tails)) == 1 and all(len(n) == width for n in nums)
                and values == list(range(values[0], values[0] + len(values)))):
            return f"{heads[0]}{{{nums[0]}..{nums[-1]}}}{tails[0]}"
    prefix = os.path.commonprefix(urls)
    return prefix + "{" + ",".join(u[len(prefix):] for u in urls) + "}"


def run_info(args) -> int:
    from lakd.cli import UsageError
    from lakd.data.manifest import load_manifest

    try:
        m = load_manifest(args.manifest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        sys.stdout.write(m.to_json())
    else:
        print(m.summary())
        if m.shards:
            # described, not opened: a manifest's pipe:/URL entries are shown as they are
            print(f"webdataset URL: {brace_url([m.resolve(s) for s in m.shards])}  (see shards/README.md: reading "
                  f"with webdataset)")
    return OK


def run_verify(args) -> int:
    from lakd.cli import UsageError
    from lakd.data.build import verify_shards
    from lakd.engine.progress import track

    def wrap(shards, total):
        return track(shards, total=total, desc="lakd shards verify", unit="shards", enabled=not args.no_progress)

    try:
        problems = verify_shards(args.manifest, wrap=wrap)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for p in problems:
        print(p)
    # "ok" only when every shard was read and found complete
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return OK if not problems else FAILED
