"""`lakd weights list|fetch`: the catalogue of ImageNet backbone files and their download."""
from __future__ import annotations

import argparse
import json
import sys

from lakd.exit_codes import FAILED, INTERRUPTED, OK

EPILOG = """\
examples:
  lakd weights list
  lakd weights fetch resnet18-deepstem-cirkd            # into $LAKD_WEIGHTS_DIR or ~/.cache/lakd/weights
  lakd weights fetch resnet18-deepstem-cirkd resnet101-deepstem-cirkd --to /shared/weights
  lakd train --stage baseline --config voc model.pretrained=resnet18-deepstem-cirkd run.weights_dir=/shared/weights

An interrupted fetch resumes when run again (HTTP Range where the server supports it, else it restarts).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("weights", help="list and download the ImageNet backbone weights the presets use",
                              description="The catalogue of ImageNet backbone files (model.pretrained may name "
                                          "an entry) and their download.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    lst = sub.add_parser("list", help="the catalogue: name, backbone, layout, implied options, checksum, state")
    lst.add_argument("--to", metavar="DIR", help="weights folder to report on (default: $LAKD_WEIGHTS_DIR or "
                                                 "~/.cache/lakd/weights)")
    lst.add_argument("--json", action="store_true", help="one JSON object per entry")
    lst.set_defaults(func=run_list)
    f = sub.add_parser("fetch", help="download entries (sha256-checked, atomic, resumable)")
    f.add_argument("names", nargs="+", metavar="NAME", help="catalogue name(s) (see `lakd weights list`)")
    f.add_argument("--to", metavar="DIR", help="destination folder (default: $LAKD_WEIGHTS_DIR or "
                                               "~/.cache/lakd/weights)")
    f.add_argument("--no-progress", action="store_true", help="no progress output")
    f.set_defaults(func=run_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args) -> int:
    from lakd.models.catalogue import load_catalogue, weights_dir

    folder = weights_dir(args.to)
    rows = []
    for e in load_catalogue().values():
        path = folder / e.file
        checksum = e.sha256 if e.sha256 != "unknown" else (
            f"unknown (name prefix {e.sha256_prefix})" if e.sha256_prefix else "unknown")
        rows.append({"name": e.name, "backbone": e.backbone, "layout": e.layout, "options": e.options,
                     "sha256": checksum, "present": path.is_file(), "path": str(path), "url": e.url,
                     "source": e.source, "note": e.note})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return OK
    print(f"weights folder: {folder}")
    head = f"{'name':<26} {'backbone':<12} {'layout':<12} {'options':<30} {'here':<5} sha256"
    print(head)
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        print(f"{r['name']:<26} {r['backbone']:<12} {r['layout']:<12} {opts:<30} "
              f"{'yes' if r['present'] else 'no':<5} {r['sha256']}")
    print("\nsources:")
    for r in rows:
        print(f"  {r['name']}: {r['url']} ({r['source']})" + (f" {r['note']}" if r["note"] else ""))
    return OK


def run_fetch(args) -> int:
    from lakd.cli import UsageError
    from lakd.models.catalogue import get_entry, weights_dir
    from lakd.models.fetch import FetchError, fetch_entry

    try:
        entries = [get_entry(name) for name in args.names]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    folder = weights_dir(args.to)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--to {folder}: not a folder")
    for entry in entries:
        try:
            result = fetch_entry(entry, folder, progress=not args.no_progress)
        except FetchError as exc:
            print(f"lakd weights: error: {exc}", file=sys.stderr, flush=True)
            return FAILED
        except KeyboardInterrupt:
            print(f"\nlakd weights: interrupted; run the same command again to resume {entry.name}",
                  file=sys.stderr, flush=True)
            return INTERRUPTED
        except OSError as exc:
            from lakd.io import is_disk_full

            if is_disk_full(exc):  # not bad input: exit 1, named (lakd.cli); the .part file stays to resume
                raise OSError(exc.errno, exc.strerror, exc.filename or str(folder / f"{entry.file}.part")) from exc
            raise UsageError(f"cannot write to {folder}: {exc.strerror or exc}") from None
        how = ("already present, checksum ok" if not result.downloaded else
               f"resumed at {result.resumed_from} bytes" if result.resumed_from else "downloaded")
        print(f"{entry.name}: {result.path} ({result.bytes} bytes, sha256 {result.sha256}; {how})")
    return OK
