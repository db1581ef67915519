"""Your own dataset: the `folder` reader with a user's dataset card, on a fake tree (folder layout with
sub-folders and a label suffix, list-file layout), `lakd shards build folder --card`, `lakd train` on it, and
bad cards (one line, exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lakd.cli import main
from lakd.data import build_shards
from lakd.data.cards import get_card, list_cards, use_card
from lakd.data.user_card import use_card_file
from tests.data import fakeraw

CARD = """\
name: kitchens
class_names: [floor, wall, table]
palette: [[80, 80, 80], [200, 200, 200], [150, 90, 40]]
ignore_id: [255, 9]
raw_to_train: {0: 0, 1: 1, 5: 2, 7: ignore}
files:
  label_suffix: _mask
"""
RAW_TO_TRAIN = {0: 0, 1: 1, 5: 2, 7: 255, 9: 255, 255: 255}


@pytest.fixture(autouse=True)
def _no_card_left_behind():
    yield
    use_card(None)  # the card in use is per process: later tests see only the built-in datasets


def _label(rng, h, w, values=(0, 1, 5, 7, 9, 255)):
    return rng.choice(np.asarray(values, dtype=np.uint8), size=(h, w))


def make_tree(root: Path, split: str, n: int = 3, seed: int = 0) -> dict:
    """images/<split>/<sub>/<stem>.jpg + labels/<split>/<sub>/<stem>_mask.png; returns key -> train ids."""
    rng = np.random.default_rng(seed)
    expected = {}
    for i in range(n):
        sub = "a" if i % 2 else "b"
        h, w = 12 + i, 16
        fakeraw.save_jpg(root / "images" / split / sub / f"img{i}.jpg", fakeraw.rgb(h, w, rng))
        raw = _label(rng, h, w)
        fakeraw.save_png(root / "labels" / split / sub / f"img{i}_mask.png", raw, palette=bool(i % 2))
        expected[f"{sub}/img{i}"] = np.vectorize(RAW_TO_TRAIN.get)(raw)
    return expected


def test_folder_layout_with_card(tmp_path):
    root = tmp_path / "raw"
    exp = make_tree(root, "train")
    (tmp_path / "card.yaml").write_text(CARD)
    use_card_file(tmp_path / "card.yaml")
    assert "folder" in list_cards() and get_card("folder").class_names == ["floor", "wall", "table"]
    m = build_shards("folder", "train", tmp_path / "out", root, workers=2, progress=False,
                     card=str(tmp_path / "card.yaml"))
    got = fakeraw.read_shard_labels(m)
    assert sorted(got) == sorted(exp)
    for key, e in exp.items():
        np.testing.assert_array_equal(got[key][0], e.astype(np.uint8), err_msg=key)
    man = json.loads(Path(m).read_text())
    assert man["dataset"] == "folder" and man["num_classes"] == 3
    assert man["config"]["reader_options"]["card"] == str((tmp_path / "card.yaml").resolve())


def test_list_file_layout_16bit_labels_and_json_card(tmp_path):
    root = tmp_path / "raw"
    rng = np.random.default_rng(1)
    lines, expected = [], {}
    for i in range(2):
        fakeraw.save_jpg(root / "pics" / f"p{i}.jpg", fakeraw.rgb(8, 10, rng))
        raw = rng.choice(np.asarray([0, 1000, 2000], dtype=np.uint16), size=(8, 10))
        (root / "ids").mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw).save(root / "ids" / f"p{i}.png")  # 16-bit grey
        lines.append(f"pics/p{i}.jpg\tids/p{i}.png")
        expected[f"pics/p{i}"] = np.vectorize({0: 255, 1000: 0, 2000: 1}.get)(raw)
    (root / "lists").mkdir()
    (root / "lists" / "val.txt").write_text("# image label\n" + "\n".join(lines) + "\n")
    card = {"class_names": ["sky", "ground"], "ignore_id": 0, "raw_to_train": {"1000": 0, "2000": 1},
            "files": {"list": "lists/{split}.txt"}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    use_card_file(tmp_path / "card.json")
    m = build_shards("folder", "val", tmp_path / "out", root, workers=1, progress=False,
                     card=str(tmp_path / "card.json"))
    got = fakeraw.read_shard_labels(m)
    for key, e in expected.items():
        np.testing.assert_array_equal(got[key][0], e.astype(np.uint8))
    assert get_card("folder").palette[:2] == [(0, 0, 0), (128, 0, 0)]  # the VOC colour map by default


def test_cli_build_then_train_without_touching_the_package(tmp_path, capsys):
    root = tmp_path / "raw"
    make_tree(root, "train", n=4)
    make_tree(root, "val", n=2, seed=3)
    card = tmp_path / "my_card.yaml"
    card.write_text(CARD)
    out = tmp_path / "shards"
    for split in ("train", "val"):
        assert main(["shards", "build", "folder", "--card", str(card), "--root", str(root), "--split", split,
                     "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    my = tmp_path / "my.yaml"
    my.write_text(f"base: synthetic\ndata: {{dataset: folder, card: {card}, shards_dir: {out}, "
                  f"crop_size: [16, 16]}}\ntrain: {{iters: 2, batch_size: 2}}\neval: {{every: 0}}\n"
                  f"log: {{progress: plain}}\n")
    assert main(["train", "--stage", "baseline", "--config", str(my), f"run.runs_dir={tmp_path / 'runs'}"]) == 0
    result = json.loads((tmp_path / "runs" / "default" / "baseline" / "result.json").read_text())
    assert result["dataset"] == "folder" and result["model"]["num_classes"] == 3
    capsys.readouterr()
    # a config naming dataset folder without its card, or a bad card: one line, nothing written
    runs = tmp_path / "runs2"
    assert main(["train", "--stage", "baseline", "--config", str(my), f"run.runs_dir={runs}", "data.card=null"]) == 2
    assert "data.dataset=folder needs your dataset card" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("class_names: [a]\n")
    assert main(["train", "--stage", "baseline", "--config", str(my), f"run.runs_dir={runs}",
                 f"data.card={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "1 classes" in err
    assert not runs.exists()


BAD_CARDS = [
    ("[a, b]\n", "expected a mapping"),
    ("class_names: [a, b\n", "not valid YAML"),
    ("classes: [a, b]\n", "unknown field 'classes' (did you mean class_names?)"),
    ("class_names: []\n", "class_names must be a non-empty list"),
    ("class_names: [a, a]\n", "'a' appears more than once"),
    ("class_names: [a, b]\npalette: [[0, 0, 0]]\n", "palette must list one [r, g, b] per class (2)"),
    ("class_names: [a, b]\npalette: [[0, 0, 0], [0, 0, 300]]\n", "palette[1] must be three integers 0..255"),
    ("class_names: [a, b]\nraw_to_train: {0: 0, 1: 2}\n", "raw_to_train[1] = 2: train ids are 0..1"),
    ("class_names: [a, b]\nraw_to_train: {0: 0}\n", "maps no raw id to class 1 (b)"),
    ("class_names: [a, b]\nraw_to_train: {x: 0, 1: 1}\n", "raw_to_train key: expected an integer"),
    ("class_names: [a, b]\nignore_id: 1\n", "ignore_id 1 is also mapped to class 1"),
    ("class_names: [a, b]\nfiles: {images: ../elsewhere}\n", "files.images must be a path inside --root"),
    ("class_names: [a, b]\nfiles: {imgs: x}\n", "files: unknown field 'imgs'"),
]


@pytest.mark.parametrize("text,message", BAD_CARDS, ids=[m.split()[0] for _, m in BAD_CARDS])
def test_bad_cards_are_one_line_exit_2(tmp_path, capsys, text, message):
    make_tree(tmp_path / "raw", "train", n=1)
    card = tmp_path / "card.yaml"
    card.write_text(text)
    out = tmp_path / "out"
    code = main(["shards", "build", "folder", "--card", str(card), "--root", str(tmp_path / "raw"),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert message in err and str(card) in err
    assert not out.exists()


def test_cli_input_errors(tmp_path, capsys):
    make_tree(tmp_path / "raw", "train", n=2)
    card = tmp_path / "card.yaml"
    card.write_text(CARD)
    args = ["--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--no-progress", "--workers", "1"]
    assert main(["shards", "build", "folder", *args]) == 2
    assert "--card FILE" in capsys.readouterr().err
    assert main(["shards", "build", "voc", "--card", str(card), *args]) == 2
    assert "--card only applies to the folder dataset" in capsys.readouterr().err
    assert main(["shards", "build", "folder", "--card", str(tmp_path / "none.yaml"), *args]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["shards", "build", "folder", "--card", str(card), *args, "--split", "val"]) == 2
    assert "folder val images: directory not found" in capsys.readouterr().err
    # a raw id the card does not know: the sample is named; --skip-bad skips and counts it
    lab = tmp_path / "raw" / "labels" / "train" / "b" / "img0_mask.png"
    fakeraw.save_png(lab, np.full((12, 16), 3, dtype=np.uint8))
    assert main(["shards", "build", "folder", "--card", str(card), *args]) == 2
    assert "sample b/img0: label ids not in the card's raw_to_train or ignore_id: 3" in capsys.readouterr().err
    assert main(["shards", "build", "folder", "--card", str(card), *args, "--skip-bad"]) == 0
    assert "1 skipped" in capsys.readouterr().out
