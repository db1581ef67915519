"""`lakd export`: TorchScript / torch.export / ONNX files that match the eager model, or nothing written."""
import json

import pytest
import torch
import torch.nn.functional as F

from lakd.cli import main
from lakd.commands import export as export_cmd
from lakd.models import build_model
from lakd.models.export import save_export


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("deeplabv3", "resnet18", 8, in_channels=3, width=0.125).eval()
    base = tmp_path_factory.mktemp("exp") / "student"
    save_export(model, base, {"dataset": "synthetic"})
    return base, model


def _eager_scores(model, x):
    with torch.no_grad():
        logits = model(x).logits
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_converted_file_matches_eager_and_carries_the_contract(tmp_path, student, fmt, capsys):
    base, model = student
    out = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    assert main(["export", str(base), "--format", fmt, "--out", str(out), "--sample-size", "32", "48"]) == 0
    assert "argmax agrees on 100.000%" in capsys.readouterr().out
    extra = {"lakd.json": ""}
    if fmt == "torchscript":
        loaded = torch.jit.load(str(out), _extra_files=extra)
    else:
        loaded = torch.export.load(str(out), extra_files=extra).module()
    x = torch.randn(3, 3, 40, 56)  # another batch and size than the sample: shapes are not baked in
    with torch.no_grad():
        got = loaded(x)
    assert torch.allclose(got, _eager_scores(model, x), atol=1e-5)
    doc = json.loads(extra["lakd.json"])
    assert doc["format"] == fmt and doc["num_classes"] == 8 and doc["label_channels"] == 0
    assert len(doc["mean"]) == 3 and doc["class_names"][0] == "background"
    assert not list(tmp_path.glob("*.tmp-*"))


def test_logits_option_keeps_stride_8_and_teacher_channels(tmp_path):
    torch.manual_seed(1)
    teacher = build_model("fcn", "resnet18", 8, in_channels=4, width=0.125).eval()
    save_export(teacher, tmp_path / "teacher", {"dataset": "synthetic"})
    out = tmp_path / "t.pt"
    assert main(["export", str(tmp_path / "teacher"), "--format", "torchscript", "--out", str(out),
                 "--sample-size", "32", "--logits"]) == 0
    x = torch.randn(1, 4, 48, 64)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x)
        want = teacher(x).logits
    assert got.shape == (1, 8, 6, 8) and torch.allclose(got, want, atol=1e-5)


def test_a_mismatching_conversion_writes_nothing(tmp_path, student, monkeypatch, capsys):
    base, _ = student
    real = export_cmd.CONVERTERS["torchscript"]

    def off_by_a_bit(wrapper, sample, path, meta_text):
        converted, stored = real(wrapper, sample, path, meta_text)
        return (lambda x: converted(x) + 1e-2), stored

    monkeypatch.setitem(export_cmd.CONVERTERS, "torchscript", off_by_a_bit)
    out = tmp_path / "m.pt"
    assert main(["export", str(base), "--format", "torchscript", "--out", str(out), "--sample-size", "32"]) == 1
    assert "does not match the eager model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"an earlier, good model")  # a failed conversion leaves the file there untouched
    assert main(["export", str(base), "--format", "torchscript", "--out", str(out), "--sample-size", "32"]) == 1
    assert out.read_bytes() == b"an earlier, good model" and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_onnx_without_its_packages_is_one_line(tmp_path, student, monkeypatch, capsys):
    base, _ = student
    monkeypatch.setattr(export_cmd, "missing_onnx_packages", lambda: ["onnxruntime"])
    assert main(["export", str(base), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime" in err[0] and "lakd[onnx]" in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(bool(export_cmd.missing_onnx_packages()),
                    reason=f"ONNX export check skipped: {', '.join(export_cmd.missing_onnx_packages())} not "
                           "installed (pip install 'lakd[onnx]')")
def test_onnx_matches_eager_in_onnxruntime(tmp_path, student):
    import numpy as np
    import onnxruntime

    base, model = student
    out = tmp_path / "m.onnx"
    assert main(["export", str(base), "--format", "onnx", "--out", str(out), "--sample-size", "32"]) == 0
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 40, 48)
    got = torch.from_numpy(np.asarray(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]))
    assert torch.allclose(got, _eager_scores(model, x), atol=1e-4)


def test_bad_input_exits_2_and_writes_nothing(tmp_path, student, capsys):
    base, _ = student
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        ["--out", str(tmp_path / "adir")],  # a directory
        ["--out", str(tmp_path / "afile" / "m.pt")],  # below a file
        ["--out", str(tmp_path / "m.pt"), "--sample-size", "8"],
        ["--out", str(tmp_path / "m.pt"), "--rtol", "0"],
    ]
    for extra in cases:
        assert main(["export", str(base), "--format", "torchscript", *extra]) == 2, extra
    assert main(["export", str(tmp_path / "nope"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith("lakd export: error:") for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_a_folder_dataset_export_names_its_classes_from_the_recorded_card(tmp_path, capsys):
    """`lakd train` records a folder dataset's card in the export; `lakd export` reads the class names from it
    (a card that is gone: numbered classes and a note)."""
    from lakd.config import load_config
    from lakd.data.cards import use_card
    from lakd.engine.assemble import Exporter

    card = tmp_path / "card.yaml"
    card.write_text("name: kitchens\nclass_names: [floor, wall, table]\n"
                    "palette: [[80, 80, 80], [200, 200, 200], [150, 90, 40]]\n")
    try:
        cfg = load_config("synthetic", [f"run.runs_dir={tmp_path / 'runs'}", "data.dataset=folder",
                                        f"data.card={card}"], stage="baseline")
        torch.manual_seed(0)
        st = Exporter(cfg, [0.0] * 3, [1.0] * 3).save(build_model("fcn", "plaincnn", 3, width=0.25), "baseline", 2)
        assert json.loads(st.with_suffix(".json").read_text())["card"] == str(card.absolute())
        use_card(None)  # a fresh process: only the built-in datasets are known
        out = tmp_path / "m.pt"
        assert main(["export", str(st), "--format", "torchscript", "--out", str(out), "--sample-size", "32"]) == 0
        extra = {"lakd.json": ""}
        torch.jit.load(str(out), _extra_files=extra)
        assert json.loads(extra["lakd.json"])["class_names"] == ["floor", "wall", "table"]
        use_card(None)
        card.unlink()
        capsys.readouterr()
        assert main(["export", str(st), "--format", "torchscript", "--out", str(out), "--sample-size", "32"]) == 0
        assert "classes are shown by number" in capsys.readouterr().err
    finally:
        use_card(None)
