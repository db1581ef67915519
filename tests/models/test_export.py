"""Exports: safetensors + JSON round trip, no pickle, clear errors on bad files."""
import json

import pytest
import torch

from lakd.models import build_model
from lakd.models.export import export_paths, load_export, save_export


def _model(**kw):
    torch.manual_seed(0)
    return build_model("pspnet", "resnet18", 6, in_channels=4, width=0.125, **kw)


def test_round_trip(tmp_path):
    model = _model(dropout=0.01)
    model.train()
    model(torch.randn(2, 4, 32, 32))  # move BN running stats away from their initial values
    model.eval()
    st, js = save_export(model, tmp_path / "teacher", {"dataset": "synthetic", "mean": [1, 2, 3],
                                                        "std": [4, 5, 6], "stage": "teacher"})
    assert st.name == "teacher.safetensors" and js.name == "teacher.json"
    meta = json.loads(js.read_text())
    assert meta["model"] == model.config
    assert meta["label_channels"] == 1 and meta["num_classes"] == 6 and meta["dataset"] == "synthetic"
    assert meta["mean"] == [1.0, 2.0, 3.0] and meta["std"] == [4.0, 5.0, 6.0] and meta["stage"] == "teacher"
    assert not list(tmp_path.glob("*.tmp-*"))
    for p in (tmp_path / "teacher", st, js):
        loaded, m = load_export(p)
        assert m == meta and not loaded.training
        sa, sb = model.state_dict(), loaded.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        x = torch.randn(1, 4, 40, 40)
        with torch.no_grad():
            assert torch.equal(model(x).logits, loaded(x).logits)


def test_file_is_plain_safetensors_with_bare_keys(tmp_path):
    from safetensors.torch import load_file

    class Wrapper(torch.nn.Module):  # e.g. DDP / DeepSpeed engines expose the model as .module
        def __init__(self, m):
            super().__init__()
            self.module = m

    model = _model()
    st, _ = save_export(Wrapper(model), tmp_path / "x", {"dataset": "voc"})
    raw = st.read_bytes()
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # neither a zip (torch.save) nor a pickle
    sd = load_file(str(st))
    assert set(sd) == set(model.state_dict())
    assert not any(k.startswith("module.") for k in sd)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match=r"nothing\.json does not exist"):
        load_export(tmp_path / "nothing")
    model = _model()
    st, js = save_export(model, tmp_path / "m", {})
    st.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match=r"m\.safetensors are not a readable safetensors file"):
        load_export(tmp_path / "m")
    # a pickled torch checkpoint under the safetensors name is refused, never unpickled
    torch.save(model.state_dict(), st)
    with pytest.raises(ValueError, match=r"not a readable safetensors file"):
        load_export(st)
    js.write_text("{broken")
    with pytest.raises(ValueError, match=r"m\.json is not valid JSON"):
        load_export(js)


def test_mismatching_weights(tmp_path):
    save_export(_model(), tmp_path / "a", {})
    other = build_model("deeplabv3", "resnet18", 6, in_channels=4, width=0.125)
    st_b, _ = save_export(other, tmp_path / "b", {})
    st_a, _ = export_paths(tmp_path / "a")
    st_a.write_bytes(st_b.read_bytes())
    with pytest.raises(ValueError, match=r"a\.safetensors do not match pspnet-resnet18: \d+ missing key"):
        load_export(tmp_path / "a")
    js = tmp_path / "b.json"
    meta = json.loads(js.read_text())
    meta["model"]["num_classes"] = 7
    js.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"do not match deeplabv3-resnet18: \d+ shape mismatch"):
        load_export(tmp_path / "b")


def test_bad_meta(tmp_path):
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_export(_model(), tmp_path / "x", {"dataset": "voc", "obj": object()})
    with pytest.raises(ValueError, match="needs a lakd model"):
        save_export(torch.nn.Linear(2, 2), tmp_path / "y", {})
    assert not list(tmp_path.iterdir())
