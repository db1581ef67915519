"""Shard I/O: which shard locations may be opened, opening one, and reading a range of its samples.

A shard entry is a local tar file or a `pipe:` command / `scheme://` URL. A `pipe:` entry runs a shell command,
so a manifest's URL entries are opened only when the user allows it (`check_openable`); the manifest is data.
Local files are opened with random access: skipping a sample reads its tar headers only.
"""
from __future__ import annotations

import tarfile
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from lakd.data.ordering import Segment


def is_url(shard: str) -> bool:
    """A `pipe:` command or a `scheme://` URL, not a file."""
    return shard.startswith("pipe:") or "://" in shard


def check_openable(entries: list[str], *, allow_urls: bool, where: str) -> None:
    """ValueError naming the first command/URL entry of `entries` unless the user allowed such entries."""
    urls = [s for s in entries if is_url(s)]
    if urls and not allow_urls:
        raise ValueError(
            f"{where}: shard entry {urls[0]!r} is a command or URL, not a file ({len(urls)} such entries); a "
            f"manifest is data and may not run commands. If you trust it, allow it: data.allow_pipe=true "
            f"(lakd train) or --allow-pipe (lakd eval)"
        )


def open_shard(url: str):
    """(tarfile, closer) of a shard location that `check_openable` let through."""
    if is_url(url):
        try:
            from webdataset.gopen import gopen
        except ImportError:
            raise RuntimeError(f"shard {url}: URLs and pipe: shards are opened with webdataset, which is not "
                               "installed (pip install 'lakd[remote]')") from None

        stream = gopen(url, "rb")
        return tarfile.open(fileobj=stream, mode="r|"), stream
    f = open(url, "rb")
    try:
        return tarfile.open(fileobj=f, mode="r:"), f
    except Exception:
        f.close()
        raise


def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, _, member = base.partition(".")
    return key, member


def iter_shard_range(url: str, start: int, stop: int, needed: Callable[[int], bool] | None = None,
                     counts: dict | None = None, warn: Callable[[str], None] | None = None):
    """Yield (position, sample) for positions start..stop-1 of one shard, in order.

    `sample` is a dict {member: bytes, "__key__": tar key} or None when the position could not be read (the
    shard is truncated, unreadable or shorter than the manifest says; `counts["truncated_shards"]` counts it
    and `warn` names it). Positions for which `needed(pos)` is false are skipped without reading their bytes
    and are not yielded.
    """
    def bad(msg):
        if warn is not None:
            warn(msg)
        if counts is not None:
            counts["truncated_shards"] += 1

    pos = -1  # position of the sample being read
    try:
        tf, closer = open_shard(url)
    except Exception as exc:
        bad(f"cannot open shard {url}: {type(exc).__name__}: {exc}")
        tf = closer = None
    if tf is not None:
        cur_key, cur, want = None, None, False
        try:
            try:
                for member in tf:
                    if not member.isfile():
                        continue
                    key, field = _split_name(member.name)
                    if key != cur_key:
                        if want:
                            yield pos, cur
                        pos += 1
                        cur_key, cur, want = key, None, False
                        if pos >= stop:
                            break
                        want = pos >= start and (needed is None or needed(pos))
                        if want:
                            cur = {"__key__": key}
                    if want:
                        cur[field] = tf.extractfile(member).read()
                else:  # the shard ended
                    if want:
                        yield pos, cur
                    pos += 1
                    if pos < stop:
                        bad(f"shard {url} holds {pos} samples, the manifest promises at least {stop}")
            except Exception as exc:  # truncated / garbage tar: the rest of this shard is lost
                bad(f"shard {url} unreadable at sample {max(pos, 0)}: {type(exc).__name__}: {exc}")
                if want:
                    yield pos, None
                pos += 1
        finally:
            try:
                tf.close()
                closer.close()
            except Exception:  # e.g. a `pipe:` reader killed by SIGPIPE because we stopped early
                pass
    for p in range(max(pos, start), stop):  # positions the shard could not deliver
        if needed is None or needed(p):
            yield p, None


def read_segments(urls: list[str], offsets: list[int], segments: list["Segment"], needed_mask, counts: dict,
                  warn: Callable[[str], None]) -> Iterator[tuple[int, dict | None]]:
    """Yield (position within the concatenated segments, sample) in increasing order. Samples carry their
    global index (`__index__`, from the shards' `offsets`) and shard (`__url__`). Positions false in
    `needed_mask` (None: all needed) are skipped unread."""
    base = 0
    for seg in segments:
        length = seg.stop - seg.start
        if needed_mask is not None and not needed_mask[base:base + length].any():
            base += length
            continue
        if needed_mask is None:
            needed = None
        else:
            def needed(p, m=needed_mask, b0=base, s0=seg.start):
                return bool(m[b0 + p - s0])
        for p, sample in iter_shard_range(urls[seg.shard], seg.start, seg.stop, needed, counts, warn):
            if sample is not None:
                sample["__index__"] = offsets[seg.shard] + p
                sample["__url__"] = urls[seg.shard]
            yield base + p - seg.start, sample
        base += length


def shard_offsets(counts: list[int]) -> list[int]:
    """Global index of the first sample of each shard."""
    out, acc = [], 0
    for n in counts:
        out.append(acc)
        acc += int(n)
    return out
