"""Dataset cards: class names, palette and the raw-id -> train-id mapping of every supported dataset.

The JSON files in `lakd/data/cards/<name>.json` are the single source of truth; the readers build their
lookup tables from `DatasetCard.raw_to_train`. `shards/README.md` documents them for people.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lakd import IGNORE_INDEX

CARD_DIR = Path(__file__).with_name("cards")
NAMES = ("cityscapes", "ade20k", "voc", "coco_stuff164k", "coco_stuff10k", "camvid", "synthetic")
FOLDER = "folder"  # a user's dataset: lakd.data.readers.folder + a card file (lakd.data.user_card)
_USER_CARD: list[DatasetCard] = []  # the user's card in use in this process (at most one)


def use_card(card: DatasetCard | None) -> None:
    """Make `card` the card of dataset `folder` in this process (None: forget it)."""
    _USER_CARD[:] = [card] if card is not None else []


@dataclass(frozen=True)
class DatasetCard:
    name: str
    num_classes: int
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = IGNORE_INDEX
    description: str = ""
    label_source: str = ""
    palette_source: str = ""
    # raw annotation value -> train id (IGNORE_INDEX for "labelled as void"); values absent here are invalid
    raw_to_train: dict[int, int] = field(default_factory=dict)

    def lookup_table(self, size: int = 256) -> np.ndarray:
        """int16 table of `size` entries: raw value -> train id, -1 for values outside the mapping."""
        lut = np.full(size, -1, dtype=np.int16)
        for raw, train in self.raw_to_train.items():
            if raw < size:
                lut[raw] = train
        return lut

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """HxW train ids -> HxWx3 uint8 RGB using the palette (ignore -> black)."""
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return pal[np.asarray(label, dtype=np.uint8)]

    def to_dict(self) -> dict:
        return {
            "name": self.name, "num_classes": self.num_classes, "ignore_index": self.ignore_index,
            "description": self.description, "label_source": self.label_source,
            "class_names": list(self.class_names), "palette": [list(p) for p in self.palette],
            "palette_source": self.palette_source,
            "raw_to_train": {str(k): v for k, v in sorted(self.raw_to_train.items())},
        }


def list_cards() -> list[str]:
    """Names of every dataset lakd can read: the built-in ones, and `folder` once a user's card is in use."""
    return list(NAMES) + ([FOLDER] if _USER_CARD else [])


def get_card(name: str) -> DatasetCard:
    """The card of dataset `name` (one of `list_cards()`; `folder`: the user's card in use)."""
    if name == FOLDER:
        if not _USER_CARD:
            raise ValueError("dataset 'folder' needs your dataset card: `lakd shards build folder --card FILE`, "
                             "config key data.card=FILE")
        return _USER_CARD[0]
    return _builtin_card(name)


@functools.lru_cache(maxsize=None)
def _builtin_card(name: str) -> DatasetCard:
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(NAMES)} (or folder with your own card)")
    d = json.loads((CARD_DIR / f"{name}.json").read_text())
    card = DatasetCard(
        name=d["name"], num_classes=int(d["num_classes"]), class_names=list(d["class_names"]),
        palette=[tuple(int(c) for c in p) for p in d["palette"]], ignore_index=int(d.get("ignore_index", IGNORE_INDEX)),
        description=d.get("description", ""), label_source=d.get("label_source", ""),
        palette_source=d.get("palette_source", ""),
        raw_to_train={int(k): int(v) for k, v in d.get("raw_to_train", {}).items()},
    )
    if len(card.class_names) != card.num_classes or len(card.palette) != card.num_classes:
        raise ValueError(f"dataset card {name}: class_names/palette do not match num_classes")
    return card
