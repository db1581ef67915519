"""A user's dataset card (YAML or JSON) for the `folder` dataset: classes, colours, raw id -> train id.

    name: kitchens                  # optional, shown in reports
    class_names: [floor, wall, table]
    palette: [[80, 80, 80], [200, 200, 200], [150, 90, 40]]   # optional (default: the VOC colour map)
    ignore_id: 255                  # raw label value(s) meaning "not labelled" (int or list; default 255)
    raw_to_train: {0: 0, 1: 1, 2: 2, 7: ignore}   # optional (default: raw id k -> class k for every class)
    files:                          # optional: where the pairs are under --root; {split} = the split name
      list: "{split}.txt"           #   a list file of "image label" lines, used when it exists
      images: images/{split}        #   else every image in this folder ...
      labels: labels/{split}        #   ... with the label <image stem><label_suffix>.png here
      label_suffix: ""

Raw values that are neither mapped nor ignore_id make a sample bad (named, `--skip-bad` skips it). The card is
data: it is parsed, never run; every problem is one ValueError line naming the file and the field.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import yaml

from lakd import IGNORE_INDEX
from lakd.data.cards import FOLDER, DatasetCard

FIELDS = ("name", "description", "class_names", "palette", "ignore_id", "raw_to_train", "files")
FILE_FIELDS = {"list": "{split}.txt", "images": "images/{split}", "labels": "labels/{split}", "label_suffix": ""}
MAX_CLASSES = 255  # train ids are stored as uint8 with 255 = ignore


def voc_colour_map(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (bit-interleaved class index), a common default for label palettes."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def _int(v, where: str) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{where}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    raise ValueError(f"{where}: expected an integer, got {v!r}")


def read_card_file(path: str | Path) -> dict:
    """The raw mapping of a card file (YAML or JSON; JSON is YAML)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ValueError(f"dataset card {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"dataset card {p}: cannot read it ({exc})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"dataset card {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'} "
                         f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"dataset card {p}: expected a mapping with class_names, got {type(data).__name__}")
    return data


def card_from_dict(d: dict, where: str) -> tuple[DatasetCard, dict[str, str]]:
    """`(DatasetCard, files layout)` from a card's mapping; ValueError naming `where` and the field."""
    unknown = sorted(set(map(str, d)) - set(FIELDS))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], FIELDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"{where}: unknown field {unknown[0]!r}{hint}; fields: {', '.join(FIELDS)}")
    names = d.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"{where}: class_names must be a non-empty list of names")
    if len(names) < 2 or len(names) > MAX_CLASSES:
        raise ValueError(f"{where}: class_names: {len(names)} classes; lakd needs 2 to {MAX_CLASSES}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: class_names: {dup[0]!r} appears more than once")
    n = len(names)

    palette = d.get("palette")
    if palette is None:
        palette = voc_colour_map(n)
    if not isinstance(palette, list) or len(palette) != n:
        raise ValueError(f"{where}: palette must list one [r, g, b] per class ({n}), got "
                         f"{len(palette) if isinstance(palette, list) else palette!r}")
    pal = []
    for i, c in enumerate(palette):
        if not (isinstance(c, (list, tuple)) and len(c) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)):
            raise ValueError(f"{where}: palette[{i}] must be three integers 0..255, got {c!r}")
        pal.append(tuple(c))

    ignore = d.get("ignore_id", IGNORE_INDEX)
    ignore_ids = [_int(v, f"{where}: ignore_id") for v in (ignore if isinstance(ignore, list) else [ignore])]

    raw = d.get("raw_to_train")
    mapping: dict[int, int] = {}
    if raw is None:
        mapping = {k: k for k in range(n)}
    elif not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: raw_to_train must be a mapping raw id -> train id (or ignore)")
    else:
        for k, v in raw.items():
            rid = _int(k, f"{where}: raw_to_train key")
            if v is None or (isinstance(v, str) and v.strip().lower() == "ignore"):
                mapping[rid] = IGNORE_INDEX
                continue
            tid = _int(v, f"{where}: raw_to_train[{rid}]")
            if not (0 <= tid < n or tid == IGNORE_INDEX):
                raise ValueError(f"{where}: raw_to_train[{rid}] = {tid}: train ids are 0..{n - 1} "
                                 f"(or ignore), the card has {n} classes")
            mapping[rid] = tid
        unused = sorted(set(range(n)) - set(mapping.values()))
        if unused:
            raise ValueError(f"{where}: raw_to_train maps no raw id to class {unused[0]} ({names[unused[0]]})")
    for rid in ignore_ids:
        if rid in mapping and mapping[rid] != IGNORE_INDEX:
            raise ValueError(f"{where}: ignore_id {rid} is also mapped to class {mapping[rid]} in raw_to_train")
        mapping[rid] = IGNORE_INDEX
    bad = [r for r in mapping if not 0 <= r <= 65535]
    if bad:
        raise ValueError(f"{where}: raw id {bad[0]} outside 0..65535 (8- or 16-bit label PNGs)")

    files = d.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError(f"{where}: files must be a mapping ({', '.join(FILE_FIELDS)})")
    extra = sorted(set(files) - set(FILE_FIELDS))
    if extra:
        raise ValueError(f"{where}: files: unknown field {extra[0]!r}; fields: {', '.join(FILE_FIELDS)}")
    layout = {k: files.get(k, default) for k, default in FILE_FIELDS.items()}
    for k, v in layout.items():
        if not isinstance(v, str):
            raise ValueError(f"{where}: files.{k} must be a string, got {v!r}")
        if k != "label_suffix" and (Path(v).is_absolute() or ".." in Path(v).parts):
            raise ValueError(f"{where}: files.{k} must be a path inside --root, got {v!r}")

    name = str(d.get("name") or FOLDER)
    card = DatasetCard(name=name, num_classes=n, class_names=list(names), palette=pal, ignore_index=IGNORE_INDEX,
                       description=str(d.get("description") or ""), label_source=f"user card {where}",
                       palette_source="user card" if d.get("palette") is not None else "VOC colour map",
                       raw_to_train=dict(sorted(mapping.items())))
    return card, layout


def load_card_file(path: str | Path) -> tuple[DatasetCard, dict[str, str]]:
    """`(DatasetCard, files layout)` of a card file; one-line ValueError naming the file for any problem."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        st = None
    return _load(str(p), st.st_mtime_ns if st else 0, st.st_size if st else 0)


@functools.lru_cache(maxsize=16)
def _load(path: str, _mtime: int, _size: int) -> tuple[DatasetCard, dict[str, str]]:  # cached per file version
    return card_from_dict(read_card_file(path), f"dataset card {path}")


def use_card_file(path: str | Path) -> DatasetCard:
    """Load a card file and make it the `folder` dataset's card in this process."""
    from lakd.data.cards import use_card

    card, _ = load_card_file(Path(path).resolve())
    use_card(card)
    return card
