"""`lakd predict EXPORT IMAGES_OR_DIR --out DIR`: raw class ids + overlays; refusals before any work."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lakd.cli import main
from lakd.data.cards import get_card
from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lakd.models import build_model
from lakd.models.export import save_export


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("fcn", "resnet18", 8, in_channels=3, width=0.125).eval()
    for m in model.modules():  # non-trivial running stats, so the prediction is not one class everywhere
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    base = tmp_path_factory.mktemp("exp") / "student"
    save_export(model, base, {"dataset": "synthetic"})
    return base, model


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a.png", (40, 56)), ("b.jpg", (32, 32)), ("sub/c.png", (33, 47))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image: ignored by the folder search")
    return root


def _expected_ids(model, path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    x = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        logits = model(x[None]).logits
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True).argmax(1)[0].numpy()


def test_ids_equal_the_eager_prediction_and_overlays_use_the_palette(tmp_path, student, images):
    base, model = student
    out = tmp_path / "out"
    assert main(["predict", str(base), str(images), "--out", str(out), "--alpha", "1", "--no-progress"]) == 0
    names = sorted(str(p.relative_to(out / "ids")) for p in (out / "ids").rglob("*.png"))
    assert names == ["a.png", "b.png", "sub/c.png"]
    palette = np.asarray(get_card("synthetic").palette, dtype=np.uint8)
    for rel, src in (("a.png", "a.png"), ("b.png", "b.jpg"), ("sub/c.png", "sub/c.png")):
        ids = Image.open(out / "ids" / rel)
        assert ids.mode == "L"
        ids = np.asarray(ids)
        want = _expected_ids(model, images / src)
        assert ids.shape == want.shape and (ids == want).all()
        overlay = np.asarray(Image.open(out / "overlay" / rel).convert("RGB"))
        assert (overlay == palette[ids]).all()  # alpha 1: the class colour itself
    assert len(np.unique(np.asarray(Image.open(out / "ids" / "a.png")))) > 1


def test_single_files_and_slide_mode(tmp_path, student, images):
    base, _ = student
    out = tmp_path / "out"
    assert main(["predict", str(base), str(images / "a.png"), str(images / "sub" / "c.png"), "--out", str(out),
                 "--mode", "slide", "--crop-size", "24", "--stride", "16", "--no-overlay", "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "ids").iterdir()) == ["a.png", "c.png"]
    assert not (out / "overlay").exists()
    assert np.asarray(Image.open(out / "ids" / "c.png")).shape == (33, 47)


def test_progress_lines_when_not_a_terminal(tmp_path, student, images, capsys):
    base, _ = student
    assert main(["predict", str(base), str(images), "--out", str(tmp_path / "o")]) == 0
    assert "lakd predict: 3/3 images (100%)" in capsys.readouterr().err


def test_label_assisted_teacher_is_refused_before_anything_is_written(tmp_path, images, capsys):
    teacher = build_model("fcn", "resnet18", 8, in_channels=4, width=0.125)
    save_export(teacher, tmp_path / "teacher", {"dataset": "synthetic"})
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "teacher"), str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label-assisted teacher" in err[0] and "student or baseline" in err[0]
    assert not out.exists()


def test_bad_input_exits_2_and_writes_nothing(tmp_path, student, images, capsys):
    base, _ = student
    (images / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "afile").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "a.png")
    out = tmp_path / "out"
    cases = [
        [str(images)],  # broken.png: header unreadable
        [str(tmp_path / "missing.png")],
        [str(images / "a.png"), str(other / "a.png")],  # both would be a.png
        [str(tmp_path / "afile")],  # not an image
        [str(other), "--mode", "slide"],  # no crop size known
        [str(other), "--alpha", "2"],
        [str(other), "--device", "tpu9"],
    ]
    for extra in cases:
        assert main(["predict", str(base), *extra, "--out", str(out)]) == 2, extra
    assert main(["predict", str(base), str(other), "--out", str(tmp_path / "afile")]) == 2
    assert main(["predict", str(tmp_path / "nope"), str(other), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(cases) + 2 and all(line.startswith("lakd predict: error:") for line in lines)
    assert not out.exists()
