"""`lakd eval --save-ids DIR`: raw class-id PNGs beside (or instead of) the colour ones."""
import numpy as np
import torch
from PIL import Image

from lakd.cli import main
from lakd.data.build import build_shards
from lakd.data.cards import get_card
from lakd.models import build_model
from lakd.models.export import save_export


def test_raw_ids_match_the_colour_pngs(tmp_path, capsys):
    shards = build_shards("synthetic", "val", tmp_path / "shards", num_samples=3, image_size=32, seed=0,
                          samples_per_shard=3, workers=1, progress=False)
    torch.manual_seed(0)
    save_export(build_model("fcn", "resnet18", 8, in_channels=3, width=0.125), tmp_path / "student",
                {"dataset": "synthetic"})
    assert main(["eval", str(tmp_path / "student"), "--shards", str(shards), "--save-png", str(tmp_path / "rgb"),
                 "--save-ids", str(tmp_path / "ids")]) == 0
    assert "lakd eval [image]: 3/3 images (100%)" in capsys.readouterr().err  # progress of the evaluation
    ids = sorted((tmp_path / "ids").glob("*.png"))
    assert len(ids) == 3 and sorted(p.name for p in (tmp_path / "rgb").glob("*.png")) == [p.name for p in ids]
    palette = np.asarray(get_card("synthetic").palette, dtype=np.uint8)
    for path in ids:
        raw = Image.open(path)
        assert raw.mode == "L" and raw.size == (32, 32)
        raw = np.asarray(raw)
        assert raw.max() < 8
        assert (np.asarray(Image.open(tmp_path / "rgb" / path.name).convert("RGB")) == palette[raw]).all()
