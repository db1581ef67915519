"""`lakd eval EXPORT --shards MANIFEST`: table, JSON, PNGs, label-input variants, bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lakd.cli import main
from lakd.data.build import build_shards
from lakd.data.cards import get_card
from lakd.method.label_noise import LabelNoiser
from lakd.models import build_model
from lakd.models.export import save_export


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return build_shards("synthetic", "val", out, num_samples=4, image_size=32, seed=0, samples_per_shard=3,
                        workers=1, progress=False)


def _export(tmp_path, label_channels, noise=True):
    torch.manual_seed(0)
    model = build_model("fcn", "resnet18", 8, in_channels=3 + label_channels, width=0.125)
    meta = {"dataset": "synthetic"}
    if label_channels and noise:
        settings = LabelNoiser(8, code_dim=label_channels, scale=1.0).to_dict()
        settings.pop("num_classes")  # the engine's exports omit it (the export has num_classes)
        meta["noise"] = settings  # the engine's key
    base = tmp_path / ("teacher" if label_channels else "student")
    save_export(model, base, meta)
    return base


def test_label_assisted_export_both_variants_json_and_pngs(tmp_path, shards, capsys):
    exp = _export(tmp_path, 1)
    out = tmp_path / "res.json"
    rc = main(["eval", str(exp), "--shards", str(shards), "--out", str(out), "--save-png", str(tmp_path / "png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "with label" in text and "zero label" in text and "magenta" in text and "mIoU" in text
    doc = json.loads(out.read_text())
    assert set(doc["eval"]) == {"label", "image"} and doc["label_channels"] == 1
    for res in doc["eval"].values():
        assert len(res["iou"]) == 8 and 0 <= res["miou"] <= 1 and res["pixels"] == 4 * 32 * 32
    pngs = sorted((tmp_path / "png" / "label").glob("*.png"))
    assert len(pngs) == 4 and len(list((tmp_path / "png" / "image").glob("*.png"))) == 4
    rgb = np.asarray(Image.open(pngs[0]).convert("RGB")).reshape(-1, 3)
    palette = {tuple(p) for p in get_card("synthetic").palette}
    assert {tuple(c) for c in rgb.tolist()} <= palette


def test_image_only_export_slide_mode(tmp_path, shards, capsys):
    exp = _export(tmp_path, 0)
    out = tmp_path / "r.json"
    assert main(["eval", str(exp), "--shards", str(shards), "--mode", "slide", "--crop-size", "24", "--stride", "16",
                 "--batch-size", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["eval"]) == {"image"} and doc["mode"] == "slide"
    assert main(["eval", str(exp), "--shards", str(shards), "--mode", "msflip", "--scales", "0.75", "1.0",
                 "--label-input", "zero"]) == 0
    # slide without --crop-size: the synthetic preset's training crop
    assert main(["eval", str(exp), "--shards", str(shards), "--mode", "slide"]) == 0
    assert "training crop" in capsys.readouterr().err


def test_fixed_only_and_missing_noise_settings(tmp_path, shards, capsys):
    exp = _export(tmp_path, 1, noise=False)
    out = tmp_path / "r.json"
    assert main(["eval", str(exp), "--shards", str(shards), "--label-input", "fixed", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["eval"]) == {"label"}
    assert "no label_noise settings" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path, shards, capsys):
    img = _export(tmp_path, 0)
    assert main(["eval", str(img), "--shards", str(shards), "--label-input", "fixed"]) == 2
    assert "no label channel" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope"), "--shards", str(shards)]) == 2
    assert "export" in capsys.readouterr().err
    assert main(["eval", str(img), "--shards", str(tmp_path / "missing.json")]) == 2
    assert "--shards" in capsys.readouterr().err
    assert main(["eval", str(img), "--shards", str(shards), "--crop-size", "1", "2", "3"]) == 2
    assert "crop-size" in capsys.readouterr().err
    torch.manual_seed(0)
    other = build_model("fcn", "resnet18", 5, width=0.125)
    save_export(other, tmp_path / "five", {"dataset": "synthetic"})
    assert main(["eval", str(tmp_path / "five"), "--shards", str(shards)]) == 2
    assert "5 classes" in capsys.readouterr().err


@pytest.mark.parametrize("noise, expect", [
    ({"code_dim": 1, "colour": 1}, "'noise' settings: unknown label_noise setting(s): colour"),
    ({"code_dim": 2}, "'noise' code_dim 2 but label_channels 1"),
])
def test_a_bad_noise_block_is_read_as_the_student_stage_reads_it(tmp_path, shards, capsys, noise, expect):
    """lakd eval builds the teacher's noiser through TeacherExport's reader: the same refusals, one line, 2."""
    torch.manual_seed(0)
    save_export(build_model("fcn", "resnet18", 8, in_channels=4, width=0.125), tmp_path / "t",
                {"dataset": "synthetic", "noise": noise})
    assert main(["eval", str(tmp_path / "t"), "--shards", str(shards)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and str(tmp_path / "t.json") in err


def test_skipped_corrupt_images_are_counted_and_said(tmp_path, shards, capsys):
    """A val label that is neither a class nor ignore: the image is left out of the scores, counted in the
    JSON (`data`) and named in a warning line."""
    import io
    import shutil

    from lakd.data import load_manifest
    from tests.data.shardedit import rewrite_shard

    copy = tmp_path / "shards"
    shutil.copytree(shards.parent, copy)
    manifest = copy / shards.name
    first = copy / load_manifest(manifest).shards[0]

    def bad_label(name, data):
        if not name.endswith("label.png") or not name.startswith("00000000"):
            return data
        arr = np.array(Image.open(io.BytesIO(data)))
        arr[0, 0] = 200  # 8 classes, ignore 255
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()

    rewrite_shard(first, bad_label)
    exp, out = _export(tmp_path, 0), tmp_path / "r.json"
    assert main(["eval", str(exp), "--shards", str(manifest), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["data"] == {"corrupt": 1, "truncated_shards": 0}
    assert "skipped 1 corrupt image(s)" in capsys.readouterr().err
    assert main(["eval", str(exp), "--shards", str(shards), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["data"] == {"corrupt": 0, "truncated_shards": 0}
    assert "skipped" not in capsys.readouterr().err
