"""File-writing policy shared by every layer: atomic replacement, and one line for a failed write.

A reader never sees a half-written file: bytes go to ``<name>.tmp-<pid>`` (fsynced) and are renamed over
the target. A failed write removes its temporary file, so a full disk is not made fuller by the attempt,
the target keeps its old content, and the error names the file that could not be written
(``OSError.filename``), which the commands print as one line (:func:`describe_os_error`).

Bytes in memory: :func:`atomic_write_bytes` / :func:`atomic_write_text`. A writer that wants a file name
(matplotlib's ``savefig``, safetensors' ``save_file``, torch.export): ``with atomic_output(path) as tmp:``
write to ``tmp``; the rename happens when the block ends without an exception. Writers use these rather than
renaming temporary files on their own (the two that still do stream their file: the shard builder's tar and a
resumable download's ``.part``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "describe_os_error", "is_disk_full",
           "tmp_path", "unwritable_reason", "unwritable_entry", "unreplaceable_reason", "naming_disk_full"]


def tmp_path(path: Path, *, keep_suffix: bool = False) -> Path:
    """The temporary name ``path`` is written under before the rename (one per process). ``keep_suffix``:
    ``<stem>.tmp-<pid><suffix>``, for writers that pick the format from the suffix (torch.export's ``.pt2``)."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f"{path.stem}.tmp-{os.getpid()}{path.suffix}")
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yields the temporary file name to write ``path`` under. When the block ends normally the file is
    fsynced and renamed over ``path``; when it raises, the temporary file is removed and ``path`` is left as
    it was. An ``OSError`` (of the writer or of the rename) is raised again naming ``path``."""
    path = Path(path)
    tmp = tmp_path(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename != str(path):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def is_disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """True for ENOSPC/EDQUOT anywhere in the exception chain; for an error without an errno (a C++ stream
    error from torch's zip writer says only ``iostream error``; DeepSpeed reports a folder it could not make
    as a missing parent) True when ``where``'s file system is full: of bytes, or of inodes."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    if where is not None:
        try:
            probe = Path(where)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            st = os.statvfs(probe)
        except OSError:
            return False
        # out of bytes, or out of inodes (a file system that counts them: f_files > 0), which is ENOSPC too
        return st.f_bavail * st.f_frsize < (1 << 20) or (st.f_files > 0 and st.f_favail == 0)
    return False


@contextlib.contextmanager
def naming_disk_full(path: Path):
    """Re-raise a full disk while writing ``path`` as ``OSError(ENOSPC, ..., path)``, whatever the writer
    raised (DeepSpeed's zip writer and safetensors raise RuntimeErrors that name neither)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and is_disk_full(exc):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    except Exception as exc:
        if is_disk_full(exc, Path(path).parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def describe_os_error(exc: OSError, *, again: str = "run the same command again") -> str:
    """``cannot write <file>: <reason>`` on one line; a full disk says what to do (``again``: what the same
    command does then, e.g. resume)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"no space left on device (free some space and {again})"
    return f"cannot write {exc.filename}: {reason}" if exc.filename else reason


def unwritable_reason(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (or, if it does not exist yet, in its nearest existing
    parent, where it would be made), or None when it can. Tries for real: creates and removes a probe file,
    which catches read-only mounts, immutable folders and permissions alike."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe == probe.parent:
            return f"{folder}: no existing parent folder"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder" + ("" if probe == folder else f" (needed for {folder})")
    return _probe_folder(probe)


def _probe_folder(folder: Path) -> str | None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".lakd-write-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"cannot create files in {folder}: {exc.strerror or exc}"
    return None


def unwritable_entry(folder: Path, *, folders: bool = True) -> str | None:
    """Why something directly inside ``folder`` cannot be rewritten, or None: a sub-folder files cannot be
    created in (probed for real, when ``folders``), or a file that cannot be replaced or appended to
    (``os.access`` sees an immutable attribute even for root, who ignores permission bits; for other users
    it also refuses a file their permissions keep them from writing). A run directory that is writable itself
    can still hold such entries, and a run would fail on them only after its first steps."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            reason = _probe_folder(entry) if folders else None
            if reason:
                return reason
        elif (reason := unreplaceable_reason(entry)) is not None:
            return reason
    return None


def unreplaceable_reason(path: Path) -> str | None:
    """Why an existing file ``path`` cannot be replaced or appended to, or None (also when it does not exist):
    ``os.access`` sees an immutable attribute or a read-only mount even for root."""
    if Path(path).is_file() and not os.access(path, os.W_OK):
        return f"cannot replace {path}: not writable (immutable, read-only or permissions)"
    return None
