"""A user's `folder` dataset for command tests: a tiny image + label tree, its card file, and val shards built
with `lakd shards build folder --card` (which records the card in the manifest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lakd.data.cards import use_card
from tests.data import fakeraw

CLASS_NAMES = ["floor", "wall", "table", "chair"]
PALETTE = [[80, 80, 80], [200, 200, 200], [150, 90, 40], [10, 120, 250]]
CARD = f"""\
name: kitchens
class_names: {CLASS_NAMES}
palette: {PALETTE}
raw_to_train: {{0: 0, 1: 1, 5: 2, 7: 3}}
"""


def build_folder_val_shards(tmp: Path, n: int = 3) -> tuple[Path, Path]:
    """(manifest, card file) of a 4-class folder dataset's val split. The card is not left in use: a command
    under test must find it itself."""
    from lakd.cli import main

    rng = np.random.default_rng(0)
    root = tmp / "raw"
    for i in range(n):
        fakeraw.save_jpg(root / "images" / "val" / f"img{i}.jpg", fakeraw.rgb(20, 24, rng))
        fakeraw.save_png(root / "labels" / "val" / f"img{i}.png",
                         rng.choice(np.asarray([0, 1, 5, 7], dtype=np.uint8), size=(20, 24)))
    card = tmp / "kitchens.yaml"
    card.write_text(CARD)
    assert main(["shards", "build", "folder", "--card", str(card), "--root", str(root), "--split", "val",
                 "--out", str(tmp / "shards"), "--workers", "1", "--no-progress"]) == 0
    use_card(None)
    return tmp / "shards" / "folder-val.manifest.json", card
