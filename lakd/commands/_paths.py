"""Output-path checks shared by the commands that write files: run before any work, so bad input costs nothing.

Each check raises ``lakd.cli.UsageError`` (one line, exit 2) naming the path, and creates nothing.
"""
from __future__ import annotations

import os
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` is, or can become, a directory this process can write into."""
    from lakd.cli import UsageError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p}: exists and is not a directory")
    base = _nearest_existing(p.absolute())
    if not base.is_dir():
        raise UsageError(f"{flag} {p}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {p}: {base} is not writable")
    return p


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` names a file (new or to replace) in a directory this process can write into."""
    from lakd.cli import UsageError

    from lakd.io import unreplaceable_reason

    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a directory, expected a file name")
    check_output_dir(p.absolute().parent, flag)
    reason = unreplaceable_reason(p)  # an immutable file in a writable folder fails only at the final rename
    if reason:
        raise UsageError(f"{flag} {reason}")
    return p


def probe_writable(directory: Path, flag: str) -> None:
    """Create ``directory`` and write + remove a probe file in it: catches read-only mounts and immutable
    directories that ``os.access`` (which only reads permission bits) misses."""
    from lakd.cli import UsageError

    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".lakd-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{flag} {directory}: cannot write there ({exc.strerror or exc})") from None
