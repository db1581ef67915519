"""The catalogue of ImageNet backbone files (`catalogue.yaml`) and where they live on this machine.

`model.pretrained` names either a local file or a catalogue entry. A catalogue entry resolves to
`<weights dir>/<entry file>`, the weights dir being `run.weights_dir`, else `$LAKD_WEIGHTS_DIR`, else
`~/.cache/lakd/weights`; `lakd weights fetch NAME` puts the file there.

Entries whose publisher gives no full sha256 say "unknown"; `fetch` then records the checksum it got in
`<file>.sha256` beside the file, and later fetches are checked against that record.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CATALOGUE_FILE = Path(__file__).with_name("catalogue.yaml")
ENV_VAR = "LAKD_WEIGHTS_DIR"
DEFAULT_DIR = Path("~/.cache/lakd/weights")
# a catalogue name: no path separator and no dot (a value with either is a file path); lakd.config keeps
# such values as they are instead of making them absolute paths
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Entry:
    name: str
    backbone: str
    layout: str
    url: str
    file: str
    sha256: str = UNKNOWN
    sha256_prefix: str = ""
    options: dict = field(default_factory=dict)
    source: str = ""
    note: str = ""

    def expected_sha256(self, weights_dir: Path) -> str | None:
        """The full sha256 to check against: the publisher's, else the one recorded at the first fetch."""
        if self.sha256 != UNKNOWN:
            return self.sha256
        return recorded_sha256(weights_dir / self.file)


def is_catalogue_name(value: str | None) -> bool:
    """Whether a `model.pretrained` value is a catalogue reference (not a path)."""
    return bool(value) and NAME_RE.match(value) is not None


@functools.lru_cache(maxsize=None)
def load_catalogue(path: str | None = None) -> dict[str, Entry]:
    """All entries by name (the packaged catalogue unless `path` names another one)."""
    p = Path(path) if path else CATALOGUE_FILE
    data = yaml.safe_load(p.read_text()) or {}
    entries = data.get("entries") or {}
    out: dict[str, Entry] = {}
    known = set(Entry.__dataclass_fields__) - {"name"}
    for name, d in entries.items():
        if not NAME_RE.match(name):
            raise ValueError(f"{p}: catalogue name {name!r} must be letters, digits, '-' or '_'")
        extra = set(d) - known
        if extra:
            raise ValueError(f"{p}: entry {name}: unknown field(s) {', '.join(sorted(extra))}")
        fields = {k: (v if v is not None else "") for k, v in d.items()}
        fields.update(options=dict(d.get("options") or {}), sha256=str(d.get("sha256") or UNKNOWN).lower(),
                      sha256_prefix=str(d.get("sha256_prefix") or "").lower())
        e = Entry(name=name, **fields)
        if e.sha256 != UNKNOWN and not re.fullmatch(r"[0-9a-f]{64}", e.sha256):
            raise ValueError(f"{p}: entry {name}: sha256 must be 64 hex digits or 'unknown'")
        out[name] = e
    return out


def get_entry(name: str) -> Entry:
    cat = load_catalogue()
    if name not in cat:
        import difflib

        close = difflib.get_close_matches(name, list(cat), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"no weights named {name!r} in the catalogue{hint}; `lakd weights list` shows them")
    return cat[name]


def weights_dir(setting: str | None = None) -> Path:
    """The folder holding catalogue files: `setting` (run.weights_dir), else $LAKD_WEIGHTS_DIR, else the cache."""
    value = setting or os.environ.get(ENV_VAR) or str(DEFAULT_DIR)
    return Path(os.path.expanduser(value))


def sha256_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    rec = sha256_record(path)
    try:
        text = rec.read_text().split()
    except OSError:
        return None
    return text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None


@dataclass(frozen=True)
class Resolved:
    """Where `model.pretrained` points: the file, and the catalogue entry when it named one."""
    path: Path
    entry: Entry | None = None


def resolve(value: str, weights_dir_setting: str | None = None) -> Resolved:
    """A `model.pretrained` value -> the local file (checked to exist) and its catalogue entry, if any.

    Raises ValueError with one line: an unknown name, or a missing file with the command that fetches it."""
    if is_catalogue_name(value) and not Path(value).is_file():
        entry = get_entry(value)
        folder = weights_dir(weights_dir_setting)
        path = folder / entry.file
        if not path.is_file():
            raise ValueError(f"weights {value!r} are not in {folder} (missing {entry.file}); run "
                             f"`lakd weights fetch {value} --to {folder}` (or set run.weights_dir / ${ENV_VAR}; "
                             f"model.pretrained=null trains from scratch)")
        return Resolved(path, entry)
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise ValueError(f"file not found: {value}")
    return Resolved(path, None)


def apply_options(options: dict, entry: Entry | None) -> dict:
    """`options` plus what `entry` implies; a conflicting value is a one-line ValueError."""
    if entry is None:
        return dict(options)
    out = dict(options)
    for key, value in entry.options.items():
        if out.get(key) is not None and out[key] != value:
            raise ValueError(f"weights {entry.name} need {key}: {value!r} ({entry.layout} layout), but "
                             f"model.options sets {key}: {out[key]!r}; remove it or pick other weights")
        out[key] = value
    return out
