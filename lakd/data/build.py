"""Raw dataset -> WebDataset tar shards + manifest.

Shard `<dataset>-<split>-%06d.tar` holds, per sample with key `%08d` (position in the split):
  `<key>.<jpg|png|webp>`  the image bytes as found in the raw dataset (other formats re-encoded as PNG),
  `<key>.label.png`       single-channel uint8 PNG of train ids (255 = ignore),
  `<key>.json`            {"key": raw sample name, "index", "dataset", "split", "width", "height", "image_format"}.
Tar members have fixed mtime/uid/gid/mode and sample order is the sorted raw order, so the same input gives
byte-identical shards whatever the number of workers. Every file is written to `<name>.tmp-<pid>` and
renamed when complete; the manifest is written last.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import lakd
from lakd.data.cards import get_card
from lakd.data.manifest import FORMAT, Manifest, manifest_name
from lakd.data.readers import get_reader
from lakd.data.readers.base import BadSample
from lakd.io import atomic_output, atomic_write_bytes  # noqa: F401 - atomic_write_bytes: re-exported for older callers

DEFAULT_SAMPLES_PER_SHARD = 256


def shard_name(dataset: str, split: str, index: int) -> str:
    return f"{dataset}-{split}-{index:06d}.tar"


def encode_label_png(label: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8), mode="L").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    tf.addfile(ti, io.BytesIO(data))


class _ShardWriter:
    """Writes shards one after another; each is a temp file until closed complete."""

    def __init__(self, out_dir: Path, dataset: str, split: str, per_shard: int):
        self.out_dir, self.dataset, self.split, self.per_shard = out_dir, dataset, split, per_shard
        self.names: list[str] = []
        self.counts: list[int] = []
        self.sha: dict[str, str] = {}
        self._tf = None
        self._f = None
        self._tmp = None
        self.done: list[Path] = []  # finished shards, still under their temporary names
        self._n = 0

    def _open(self):
        name = shard_name(self.dataset, self.split, len(self.names))
        self._tmp = self.out_dir / f"{name}.tmp-{os.getpid()}"
        self._f = open(self._tmp, "wb")
        self._tf = tarfile.open(fileobj=self._f, mode="w", format=tarfile.USTAR_FORMAT)
        self.names.append(name)
        self._n = 0

    def add(self, index: int, image_bytes: bytes, ext: str, label_png: bytes, meta: dict) -> None:
        if self._tf is None:
            self._open()
        key = f"{index:08d}"
        _tar_add(self._tf, f"{key}.{ext}", image_bytes)
        _tar_add(self._tf, f"{key}.label.png", label_png)
        _tar_add(self._tf, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self._n += 1
        if self._n >= self.per_shard:
            self.close_shard()

    def close_shard(self) -> None:
        if self._tf is None:
            return
        self._tf.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        name = self.names[-1]
        h = hashlib.sha256()
        with open(self._tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        self.done.append(self._tmp)
        self.sha[name] = h.hexdigest()
        self.counts.append(self._n)
        self._tf = self._f = self._tmp = None

    def commit(self) -> None:
        """Give every finished shard its name: until the whole split is written (a full disk may stop it),
        shards of an earlier build stay as they were, beside their manifest."""
        for tmp, name in zip(self.done, self.names):
            os.replace(tmp, self.out_dir / name)
        self.done = []

    def abort(self) -> None:
        """Remove every temporary shard; errors of the failed file are not raised again over the first."""
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
        for tmp in [*self.done, self._tmp]:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._tf = self._f = self._tmp = None
        self.done = []


def _process(job):
    """Worker: read + validate one raw sample. Returns (ok, payload)."""
    dataset, ref, num_classes = job
    reader = get_reader(dataset)
    try:
        s = reader.read_sample(ref)
        label = np.asarray(s.label)
        if label.dtype != np.uint8 or label.ndim != 2:
            raise BadSample(f"sample {s.key}: reader returned label {label.dtype} {label.shape}, expected 2-D uint8")
        counts = np.bincount(label.ravel(), minlength=256)
        if counts[num_classes:255].any():
            bad = np.nonzero(counts[num_classes:255])[0] + num_classes
            raise BadSample(f"sample {s.key}: train ids {bad.tolist()[:10]} >= num_classes {num_classes}")
        return True, (s.key, s.image_bytes, s.image_ext, encode_label_png(label), counts[:num_classes].tolist(),
                      int(counts[255]), label.shape)
    except BadSample as exc:
        return False, (getattr(ref, "key", str(ref)), str(exc))
    except Exception as exc:  # unexpected reader failure: still name the sample
        key = getattr(ref, "key", str(ref))
        return False, (key, f"sample {key}: {type(exc).__name__}: {exc}")


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool | None):
        self.total, self.desc, self.n = total, desc, 0
        self.enabled = True if enabled is None else enabled
        self.tty = sys.stderr.isatty()
        self.t0 = self._last = time.monotonic()
        self._bar = None
        if self.enabled and self.tty:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, skipped: int, shards: int) -> None:
        self.n += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(shards=shards, skipped=skipped, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= 10 or self.n == self.total:
            self._last = now
            rate = self.n / max(now - self.t0, 1e-9)
            print(f"[lakd shards] {self.desc}: {self.n}/{self.total} samples ({100 * self.n / max(self.total, 1):.0f}%),"
                  f" {shards} shards, {skipped} skipped, {rate:.1f} samples/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def build_shards(dataset: str, split: str, out_dir, root=None, *, samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
                 workers: int | None = None, skip_bad: bool = False, progress: bool | None = None, **opts) -> Path:
    """Convert one split of a raw dataset into shards + manifest; returns the manifest path.

    `opts` go to the reader (synthetic: num_samples, image_size, seed). Bad input raises `ValueError`
    naming the sample, unless `skip_bad`, which skips and counts it in the manifest.
    """
    card = get_card(dataset)
    reader = get_reader(dataset)
    if split not in reader.SPLITS:
        raise ValueError(f"{dataset}: unknown split {split!r}; known: {', '.join(reader.SPLITS)}")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if dataset != "synthetic" and root is None:
        raise ValueError(f"{dataset}: --root (the raw dataset folder) is required")
    workers = max(1, min(8, os.cpu_count() or 1)) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    refs = reader.list_samples(Path(root) if root is not None else None, split, **opts)
    if not refs:
        raise ValueError(f"{dataset} {split}: no samples found under {root}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    writer = _ShardWriter(out, dataset, split, samples_per_shard)
    hist = np.zeros(card.num_classes, dtype=np.int64)
    ignore_px = 0
    skipped: list[str] = []
    bar = _Progress(len(refs), f"{dataset}/{split}", progress)
    jobs = ((dataset, r, card.num_classes) for r in refs)
    pool = None
    try:
        if workers > 1 and len(refs) > 1:
            pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers)
            results = pool.imap(_process, jobs, chunksize=max(1, min(16, len(refs) // (workers * 8) or 1)))
        else:
            results = map(_process, jobs)
        index = 0
        for ok, payload in results:
            if not ok:
                key, msg = payload
                if not skip_bad:
                    raise ValueError(f"{dataset} {split}: {msg} (use --skip-bad to skip bad samples)")
                skipped.append(key)
                print(f"[lakd shards] skipped {msg}", file=sys.stderr, flush=True)
            else:
                key, img, ext, lab_png, counts, ign, (h, w) = payload
                meta = {"key": key, "index": index, "dataset": dataset, "split": split, "width": int(w),
                        "height": int(h), "image_format": ext}
                writer.add(index, img, ext, lab_png, meta)
                hist += np.asarray(counts, dtype=np.int64)
                ignore_px += ign
                index += 1
            bar.update(len(skipped), len(writer.names))
        writer.close_shard()
    except OSError as exc:  # a full disk: name the shard being written (a file object's errors name none)
        writer.abort()
        if exc.filename is None and writer.names:
            raise OSError(exc.errno, exc.strerror or str(exc), str(out / writer.names[-1])) from exc
        raise
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    if not writer.names:
        raise ValueError(f"{dataset} {split}: every sample was bad ({len(skipped)} skipped); no shards written")

    config = {"dataset": dataset, "split": split, "root": str(Path(root).resolve()) if root is not None else None,
              "samples_per_shard": samples_per_shard, "skip_bad": bool(skip_bad),
              "reader_options": {k: v for k, v in sorted(opts.items()) if v is not None}}
    man = Manifest(dataset=dataset, split=split, shards=list(writer.names), samples_per_shard=list(writer.counts),
                   total=int(sum(writer.counts)), num_classes=card.num_classes,
                   class_pixel_histogram=[int(v) for v in hist], sha256=dict(writer.sha), config=config,
                   lakd_version=lakd.__version__, skipped=len(skipped), skipped_keys=skipped,
                   ignore_pixels=int(ignore_px), ignore_index=card.ignore_index, format=FORMAT)
    mpath = out / manifest_name(dataset, split)
    try:  # the manifest's space is taken (written, fsynced) before any shard takes its name
        with atomic_output(mpath) as tmp:
            with open(tmp, "wb") as f:
                f.write(man.to_json().encode())
                f.flush()
                os.fsync(f.fileno())
            writer.commit()
    except BaseException:
        writer.abort()
        raise
    # shards of an earlier, larger build of the same split would look like part of this one: remove them
    pat = re.compile(re.escape(f"{dataset}-{split}-") + r"\d{6}\.tar$")
    keep = set(writer.names)
    for p in out.iterdir():
        if pat.match(p.name) and p.name not in keep:
            p.unlink()
    return mpath


def _count_samples(path: str) -> int:
    """Sample keys in a tar shard (reads the member headers only)."""
    keys = set()
    with tarfile.open(path, mode="r:") as tf:
        for member in tf:
            if member.isfile():
                keys.add(member.name.rsplit("/", 1)[-1].partition(".")[0])
    return len(keys)


def verify_shards(manifest, wrap=None) -> list[str]:
    """Check every shard against the manifest: present, sha256, sample count. Returns the problems (empty if
    every shard was checked and is fine); a `pipe:`/URL entry is never opened and is reported as not checked.
    ``wrap(iterable, total)`` may wrap the loop over shards (a progress display)."""
    from lakd.data.manifest import load_manifest
    from lakd.data.shards import is_url

    m = load_manifest(manifest)
    problems = []
    pairs = list(zip(m.shards, m.samples_per_shard))
    for name, count in (wrap(pairs, len(pairs)) if wrap else pairs):
        if is_url(name):
            problems.append(f"{name}: not checked (a command/URL entry; verify reads local files only)")
            continue
        url = m.resolve(name)
        if is_url(url):
            problems.append(f"{name}: not checked (fetched through {url.split()[0]}; verify reads local files only)")
            continue
        if not os.path.exists(url):
            problems.append(f"{name}: missing")
            continue
        h = hashlib.sha256()
        with open(url, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if m.sha256.get(name) != h.hexdigest():
            problems.append(f"{name}: sha256 mismatch")
            continue
        try:
            found = _count_samples(url)
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"{name}: unreadable tar ({exc})")
            continue
        if found != count:
            problems.append(f"{name}: holds {found} samples, the manifest says {count}")
    return problems
