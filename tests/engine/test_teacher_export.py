"""TeacherExport: a model and its label noiser saved and loaded together (what the student stage reads)."""
from __future__ import annotations

import json

import pytest
import torch

from lakd.engine.teacher_export import TeacherExport, noiser_from_meta
from lakd.method.label_noise import LabelNoiser
from lakd.models import build_model


def _teacher(code_dim=2):
    torch.manual_seed(0)
    return build_model("fcn", "plaincnn", 8, width=0.25, in_channels=3 + code_dim)


def test_a_label_assisted_teacher_comes_back_with_its_noiser(tmp_path):
    noiser = LabelNoiser(8, code_dim=2, sigma=0.05, fixed_sigma=0.01, scale=10.0)
    model = _teacher()
    path = TeacherExport(model, noiser).save(tmp_path / "teacher", {"dataset": "synthetic", "step": 6})
    assert path == tmp_path / "teacher.safetensors"
    back = TeacherExport.load(path)
    assert back.noiser.to_dict() == noiser.to_dict() and back.label_channels == 2
    assert back.meta["step"] == 6 and back.meta["label_channels"] == 2
    assert not back.model.training and not any(p.requires_grad for p in back.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.model.state_dict().values()))
    # the same fixed label code as the saved noiser gives
    label = torch.randint(0, 8, (1, 6, 6))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(back.noiser.fixed(label, g1), noiser.fixed(label, g2))


def test_an_image_only_model_is_a_teacher_without_noiser(tmp_path):
    path = TeacherExport(_teacher(code_dim=0)).save(tmp_path / "baseline", {"dataset": "synthetic"})
    back = TeacherExport.load(path)
    assert back.noiser is None and back.label_channels == 0
    assert "noise" not in json.loads((tmp_path / "baseline.json").read_text())


def test_older_and_hand_made_exports(tmp_path):
    path = TeacherExport(_teacher(code_dim=1), LabelNoiser(8, code_dim=1)).save(tmp_path / "t")
    js = tmp_path / "t.json"
    meta = json.loads(js.read_text())
    # exports written before TeacherExport: the four settings only, the classes from the export
    meta["noise"] = {"code_dim": 1, "sigma": 0.2, "fixed_sigma": 0.02, "scale": 10.0}
    js.write_text(json.dumps(meta))
    back = TeacherExport.load(path)
    assert back.noiser.num_classes == 8 and back.noiser.sigma == 0.2
    # no settings at all: refused unless the caller names defaults
    del meta["noise"]
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"t\.json: the model takes 1 label channel\(s\) but the export has no"):
        TeacherExport.load(path)
    assert TeacherExport.load(path, default_noise={"code_dim": 5, "sigma": 0.1}).noiser.code_dim == 1
    # settings that contradict the model
    for bad, says in (({"code_dim": 2}, "code_dim 2 but label_channels 1"), ({"colour": 1}, "unknown label_noise")):
        with pytest.raises(ValueError, match=says):
            noiser_from_meta({**meta, "noise": bad}, path)
