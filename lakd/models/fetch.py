"""Download one weight file: progress, sha256 check, atomic write, resume after an interruption.

The bytes go to `<dest>.part`; a sidecar `<dest>.part.json` keeps the server's validator (ETag or
Last-Modified). A second call continues with an HTTP `Range` request (`If-Range` = the validator): a server
answering 206 appends, one answering 200 (no range support, or the file changed) restarts from byte 0. Only a
file whose sha256 checks out is renamed to `<dest>`; a mismatch removes the partial file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A download that did not produce a verified file (one line; the partial file is kept if resumable)."""


@dataclass
class FetchResult:
    path: Path
    sha256: str
    bytes: int
    resumed_from: int  # bytes already on disk when this call started (0: a fresh download)
    downloaded: bool  # False: the file was already there and verified


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(got: str, sha256: str | None, prefix: str | None, what: str) -> None:
    if sha256 and got != sha256.lower():
        raise FetchError(f"{what}: sha256 {got} does not match the expected {sha256}")
    if prefix and not got.startswith(prefix.lower()):
        raise FetchError(f"{what}: sha256 {got} does not start with {prefix} (the checksum in the file name)")


class _Progress:
    def __init__(self, total: int | None, start: int, desc: str, enabled: bool):
        self.total, self.n, self.desc = total, start, desc
        self.enabled = enabled
        self._bar = None
        self._last = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)

    def update(self, n: int) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= 5:
            self._last = time.monotonic()
            self.line()

    def line(self) -> None:
        of = f" of {self.total / 1e6:.1f} MB" if self.total else ""
        print(f"[lakd weights] {self.desc}: {self.n / 1e6:.1f} MB{of}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self.line()


def _read_sidecar(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


class _Lock:
    """An exclusive, non-blocking lock on `<dest>.lock` (two fetches of one file would interleave their bytes);
    the file is removed on release. A lock file removed by another process between open and flock is retried."""

    def __init__(self, path: Path):
        self.path, self.f = path, None

    def __enter__(self):
        import fcntl

        while True:
            f = open(self.path, "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise FetchError(f"{self.path.with_suffix('')}: another fetch of this file is running") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.f = f
                return self
            f.close()

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.f.close()


def fetch_url(url: str, dest: str | os.PathLike, *, sha256: str | None = None, sha256_prefix: str | None = None,
              progress: bool = True, timeout: float = 60.0) -> FetchResult:
    """Download `url` to `dest` (see the module docstring). Raises FetchError with one line."""
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"{url}: only http:// and https:// URLs can be fetched")
    if dest.is_file():
        got = file_sha256(dest)
        try:
            check_sha256(got, sha256, sha256_prefix, str(dest))
        except FetchError as exc:
            raise FetchError(f"{exc}; remove the file to download it again") from None
        return FetchResult(dest, got, dest.stat().st_size, 0, False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(dest.with_name(dest.name + ".lock")):
        return _fetch(url, dest, sha256, sha256_prefix, progress, timeout)


def _fetch(url: str, dest: Path, sha256: str | None, sha256_prefix: str | None, progress: bool,
           timeout: float) -> FetchResult:
    part = dest.with_name(dest.name + ".part")
    side = dest.with_name(dest.name + ".part.json")
    have = part.stat().st_size if part.is_file() else 0
    meta = _read_sidecar(side) if have else {}
    if have and meta.get("url") != url:
        have, meta = 0, {}  # a partial file of another URL: start again
    headers = {"User-Agent": "lakd-weights", "Accept-Encoding": "identity"}
    if have and meta.get("validator"):
        headers.update({"Range": f"bytes={have}-", "If-Range": meta["validator"]})
    elif have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
        if exc.code == 416 and have and total.isdigit() and int(total) == have:
            resp = None  # nothing left to send: the partial file is complete
        elif exc.code == 416 and have:  # a partial file longer than the file on the server: start again
            part.unlink(missing_ok=True)
            side.unlink(missing_ok=True)
            return _fetch(url, dest, sha256, sha256_prefix, progress, timeout)
        else:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: {getattr(exc, 'reason', exc)}") from None

    resumed_from = 0
    h = hashlib.sha256()
    if resp is None:
        total = have
        resumed_from = have
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        with resp:
            status = resp.status
            if status == 206 and have:
                resumed_from = have
            elif status == 200:
                have = 0  # no range support, or the file changed on the server: from the beginning
            else:
                raise FetchError(f"{url}: unexpected HTTP status {status}")
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            side.write_text(json.dumps({"url": url, "validator": validator}))
            if have:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            bar = _Progress(total, have, dest.name, progress)
            written = have
            try:
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        try:
                            block = resp.read(CHUNK)
                        except (OSError, ValueError) as exc:  # connection reset / closed mid-body
                            raise FetchError(f"{url}: interrupted after {written} bytes ({exc}); run the same "
                                             f"command again to resume") from None
                        if not block:
                            break
                        f.write(block)
                        h.update(block)
                        written += len(block)
                        bar.update(len(block))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                bar.close()
            if total is not None and written != total:
                raise FetchError(f"{url}: the connection closed after {written} of {total} bytes; run the same "
                                 f"command again to resume")
            total = written
    got = h.hexdigest()
    try:
        check_sha256(got, sha256, sha256_prefix, url)
    except FetchError:
        part.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    side.unlink(missing_ok=True)
    return FetchResult(dest, got, int(total), resumed_from, True)


def fetch_entry(entry, folder: str | os.PathLike, *, progress: bool = True) -> FetchResult:
    """Fetch a catalogue entry into `folder`. Without a published sha256, the first download's checksum is
    recorded in `<file>.sha256` and later downloads (or copies already there) are checked against it."""
    from lakd.data.build import atomic_write_bytes
    from lakd.models.catalogue import UNKNOWN, sha256_record

    folder = Path(folder)
    expected = entry.expected_sha256(folder)
    result = fetch_url(entry.url, folder / entry.file, sha256=expected, sha256_prefix=entry.sha256_prefix or None,
                       progress=progress)
    if entry.sha256 == UNKNOWN and expected is None:
        atomic_write_bytes(sha256_record(result.path), f"{result.sha256}  {entry.file}\n".encode())
    return result
