"""`lakd eval` on a user's `folder` dataset names the classes and colours of the card the shards were built with
(recorded in the manifest), and says so in one note when that card cannot be read."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lakd.cli import main
from lakd.data.cards import use_card
from lakd.models import build_model
from lakd.models.export import save_export
from tests.data.folder_shards import CLASS_NAMES, PALETTE, build_folder_val_shards


@pytest.fixture(autouse=True)
def _no_card_left_behind():
    use_card(None)
    yield
    use_card(None)


def _export(tmp_path, classes=4):
    torch.manual_seed(0)
    base = tmp_path / "student"
    save_export(build_model("fcn", "resnet18", classes, width=0.125), base, {"dataset": "folder"})
    return base


def test_eval_reads_the_card_from_the_manifest(tmp_path, capsys):
    manifest, _ = build_folder_val_shards(tmp_path)
    capsys.readouterr()
    out = tmp_path / "res.json"
    assert main(["eval", str(_export(tmp_path)), "--shards", str(manifest), "--out", str(out),
                 "--save-png", str(tmp_path / "png")]) == 0
    captured = capsys.readouterr()
    rows = [line.split()[0] for line in captured.out.splitlines()]
    assert all(name in rows for name in CLASS_NAMES), captured.out
    assert "note" not in captured.err
    assert json.loads(out.read_text())["class_names"] == CLASS_NAMES
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 3
    colours = {tuple(c) for c in np.asarray(Image.open(pngs[0]).convert("RGB")).reshape(-1, 3).tolist()}
    assert colours <= {tuple(p) for p in PALETTE}


def test_a_card_that_moved_is_a_note_not_an_error(tmp_path, capsys):
    manifest, card = build_folder_val_shards(tmp_path)
    card.rename(tmp_path / "elsewhere.yaml")
    capsys.readouterr()
    out = tmp_path / "res.json"
    assert main(["eval", str(_export(tmp_path)), "--shards", str(manifest), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"lakd eval: note: dataset card {card}: file not found; classes are shown by number" in err
    assert json.loads(out.read_text())["class_names"] == [f"class_{c}" for c in range(4)]
