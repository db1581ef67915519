"""The manifest of one split of a shard set: `<out>/<dataset>-<split>.manifest.json`.

Shard entries are paths relative to the manifest's folder (as written by `lakd shards build`), absolute
paths, or `pipe:` / `scheme://` URLs (e.g. `pipe:curl -s https://host/x.tar`). A manifest is data, not a
script: URL entries are only opened when the user allows it (`load_manifest(..., allow_pipe=True)`; `lakd
train data.allow_pipe=true`, `lakd eval --allow-pipe`), since a `pipe:` entry runs a shell command.
`load_manifest(..., shard_root=...)` re-roots relative entries: a folder, or a template containing `{shard}` (e.g.
`pipe:aws s3 cp s3://bucket/shards/{shard} -`). The manifest itself may be read from a `pipe:` command; its
shards are then fetched by the same command with the manifest's file name replaced by the shard's.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lakd.data.shards import check_openable, is_url, shard_offsets

FORMAT = "lakd-shards/1"
SUFFIX = ".manifest.json"


@dataclass
class Manifest:
    dataset: str
    split: str
    shards: list[str]
    samples_per_shard: list[int]
    total: int
    num_classes: int
    class_pixel_histogram: list[int]
    sha256: dict[str, str]
    config: dict
    lakd_version: str
    skipped: int = 0
    skipped_keys: list[str] = field(default_factory=list)
    ignore_pixels: int = 0
    ignore_index: int = 255
    format: str = FORMAT
    # where the manifest was loaded from (not serialised)
    path: Path | None = field(default=None, repr=False, compare=False)
    shard_root: str | None = field(default=None, repr=False, compare=False)
    allow_pipe: bool = field(default=False, repr=False, compare=False)  # the user allowed URL entries

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in _LOCAL_FIELDS:
            d.pop(key)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path(".")

    def shard_urls(self) -> list[str]:
        """Openable location of every shard (local path or URL). Raises ValueError for a `pipe:`/URL entry of
        the manifest unless the user allowed them (``allow_pipe``)."""
        check_openable(self.shards, allow_urls=self.allow_pipe, where=str(self.path or "manifest"))
        return [self.resolve(s) for s in self.shards]

    def resolve(self, shard: str) -> str:
        if is_url(shard) or os.path.isabs(shard):
            return shard
        root = self.shard_root
        if root is None:
            return str(self.base_dir / shard)
        if "{shard}" in root:
            return root.replace("{shard}", shard)
        if root.startswith("pipe:"):
            raise ValueError("shard_root starting with 'pipe:' must contain '{shard}'")
        return str(Path(root) / shard)

    def offsets(self) -> list[int]:
        """Global index of the first sample of each shard (shards in manifest order)."""
        return shard_offsets(self.samples_per_shard)

    def summary(self) -> str:
        from lakd.data.cards import get_card

        lines = [
            f"{self.dataset} / {self.split}: {self.total} samples in {len(self.shards)} shards"
            f" ({self.skipped} skipped), {self.num_classes} classes, lakd {self.lakd_version}",
        ]
        if self.path is not None:
            lines.append(f"manifest: {self.path}")
            sizes = [os.path.getsize(u) for u in map(self.resolve, self.shards) if not is_url(u) and os.path.exists(u)]
            if sizes:
                lines.append(f"bytes on disk: {sum(sizes) / 1e6:.1f} MB ({len(sizes)} shards present locally)")
        if self.shards:
            lines.append(f"shards: {self.shards[0]} ... {self.shards[-1]}")
        hist = self.class_pixel_histogram
        tot = sum(hist) + self.ignore_pixels
        if tot:
            try:
                names = get_card(self.dataset).class_names
            except ValueError:
                names = [str(i) for i in range(self.num_classes)]
            lines.append(f"pixels: {tot} ({100.0 * self.ignore_pixels / tot:.1f}% ignore)")
            lines.append("class pixel share:")
            for i, n in enumerate(hist):
                lines.append(f"  {i:3d} {names[i] if i < len(names) else '?':<24s} {100.0 * n / tot:6.2f}%")
        if self.skipped_keys:
            lines.append("skipped: " + ", ".join(self.skipped_keys[:20]) + (" ..." if len(self.skipped_keys) > 20 else ""))
        return "\n".join(lines)


def manifest_name(dataset: str, split: str) -> str:
    return f"{dataset}-{split}{SUFFIX}"


_LOCAL_FIELDS = ("path", "shard_root", "allow_pipe")  # where and how it was loaded; not in the file


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# field -> (description, check) of every required field; a file is data: check each before using it
_REQUIRED = {
    "dataset": ("a string", lambda v: isinstance(v, str) and v != ""),
    "split": ("a string", lambda v: isinstance(v, str) and v != ""),
    "shards": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v)),
    "samples_per_shard": ("a list of integers >= 0",
                          lambda v: isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)),
    "total": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "num_classes": ("an integer >= 2", lambda v: _is_int(v) and v >= 2),
    "class_pixel_histogram": ("a list of integers", lambda v: isinstance(v, list) and all(_is_int(x) for x in v)),
    "sha256": ("a mapping of shard name to checksum",
               lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
    "config": ("a mapping", lambda v: isinstance(v, dict)),
    "lakd_version": ("a string", lambda v: isinstance(v, str)),
}
_OPTIONAL = {
    "skipped": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "skipped_keys": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "ignore_pixels": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "ignore_index": ("an integer", _is_int),
}


def _parse(d, where: str) -> Manifest:
    """A validated Manifest from a parsed JSON document (ValueError naming the file and the field)."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{where}: not a lakd shard manifest (format {d.get('format') if isinstance(d, dict) else None!r})")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{where}: not a complete lakd shard manifest: missing field(s) {', '.join(missing)}")
    for key, (what, ok) in {**_REQUIRED, **_OPTIONAL}.items():
        if key in d and not ok(d[key]):
            raise ValueError(f"{where}: manifest field '{key}' must be {what}, got {json.dumps(d[key])[:60]}")
    known = {f for f in Manifest.__dataclass_fields__ if f not in _LOCAL_FIELDS}
    m = Manifest(**{k: v for k, v in d.items() if k in known})
    if len(m.shards) != len(m.samples_per_shard) or sum(m.samples_per_shard) != m.total:
        raise ValueError(f"{where}: inconsistent manifest (shards / samples_per_shard / total)")
    if m.total == 0:
        raise ValueError(f"{where}: the manifest lists no samples ({len(m.shards)} shards); rebuild it with "
                         f"lakd shards build")
    return m


def _load_piped(url: str, shard_root: str | None) -> Manifest:
    """A manifest read from a `pipe:` command; shards default to the same command with the manifest's file
    name replaced by each shard's (e.g. `pipe:curl -s https://host/d/x-train.manifest.json`)."""
    import subprocess

    cmd = url[len("pipe:"):]
    try:
        out = subprocess.run(cmd, shell=True, check=True, capture_output=True).stdout
        d = json.loads(out)
    except subprocess.CalledProcessError as exc:
        raise ValueError(f"{url}: command failed with status {exc.returncode}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{url}: not a JSON manifest ({exc})") from None
    m = _parse(d, url)
    if shard_root is None:
        name = f"{m.dataset}-{m.split}{SUFFIX}"
        if name not in url:
            raise ValueError(f"{url}: cannot tell where the shards are; pass shard_root (a folder or a "
                             f"template with {{shard}})")
        shard_root = url.replace(name, "{shard}")
    m.shard_root = shard_root
    return m


def load_manifest(path, *, shard_root: str | None = None, allow_pipe: bool = False) -> Manifest:
    """Load a manifest from its file, a folder holding exactly one manifest, a glob matching one file, or a
    `pipe:` command printing it. ``allow_pipe``: the manifest's `pipe:`/URL shard entries may be opened."""
    if isinstance(path, Manifest):
        if allow_pipe:
            path.allow_pipe = True
        return path
    if isinstance(path, str) and path.startswith("pipe:"):
        m = _load_piped(path, shard_root)
        m.allow_pipe = allow_pipe
        return m
    p = Path(os.fspath(path))
    if p.is_dir():
        found = sorted(p.glob("*" + SUFFIX))
        if len(found) != 1:
            raise ValueError(f"{p}: expected exactly one *{SUFFIX} in the folder, found {len(found)}")
        p = found[0]
    elif not p.exists() and glob.has_magic(str(p)):
        found = sorted(glob.glob(str(p)))
        if len(found) != 1:
            raise ValueError(f"{p}: the pattern must match exactly one manifest, matched {len(found)}")
        p = Path(found[0])
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"manifest not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not a JSON manifest ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise ValueError(f"{p}: cannot read the manifest ({reason})") from None
    m = _parse(d, str(p))
    m.path = p.resolve()
    m.shard_root = shard_root
    m.allow_pipe = allow_pipe
    return m
