"""One home for atomic writes (lakd.io): a fault in the middle of a write leaves the old file whole and no
temporary file behind, for every writer that uses it (exports, report figures, the sweep's state files)."""
import errno
import json

import pytest
import torch

from lakd import io as lakd_io
from lakd.io import atomic_output, atomic_write_text
from lakd.io import tmp_path as temporary_name


def _leftovers(folder):
    return [p.name for p in folder.rglob("*.tmp-*")]


def test_a_writer_that_fails_half_way_leaves_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(OSError) as info:
        with atomic_output(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)  # names the file at fault
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle: same
        with atomic_output(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []
    with atomic_output(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and _leftovers(tmp_path) == []


def test_keep_suffix_for_writers_that_read_it(tmp_path):
    name = temporary_name(tmp_path / "m.pt2", keep_suffix=True).name
    assert name.startswith("m.tmp-") and name.endswith(".pt2")


def test_a_fault_before_the_rename_keeps_the_old_bytes(tmp_path, monkeypatch):
    target = tmp_path / "jobs.json"
    target.write_text('{"jobs": {}}')

    def fsync_fails(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(lakd_io, "_fsync", fsync_fails)
    with pytest.raises(OSError, match="Input/output error") as info:
        atomic_write_text(target, '{"jobs": {"a": []}}')
    assert info.value.filename == str(target)
    assert target.read_text() == '{"jobs": {}}' and _leftovers(tmp_path) == []


def test_sweep_state_files_are_written_through_lakd_io(tmp_path, monkeypatch):
    from lakd.sweep.state import write_text_atomic

    target = tmp_path / ".sweep" / "plan.json"
    assert write_text_atomic(target, "1") == target and target.read_text() == "1"
    monkeypatch.setattr(lakd_io, "_fsync", lambda path: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        write_text_atomic(target, "2")
    assert target.read_text() == "1" and _leftovers(tmp_path) == []


def _export(tmp_path, seed):
    from lakd.models import build_model
    from lakd.models.export import save_export

    torch.manual_seed(seed)
    model = build_model("fcn", "resnet18", 3, width=0.125)
    return model, save_export(model, tmp_path / "student", {"dataset": "synthetic"})


@pytest.mark.parametrize("fails", ["weights", "metadata"])
def test_a_failed_export_leaves_the_old_export_whole(tmp_path, monkeypatch, fails):
    import safetensors.torch

    from lakd.models import build_model
    from lakd.models.export import load_export, save_export

    old_model, (st, js) = _export(tmp_path, 0)
    old_st, old_js = st.read_bytes(), js.read_text()
    torch.manual_seed(1)
    new_model = build_model("fcn", "resnet18", 3, width=0.125)  # other weights
    if fails == "weights":
        real = safetensors.torch.save_file

        def full_disk(state, filename, metadata=None):
            real(state, filename, metadata=metadata)
            with open(filename, "r+b") as f:
                f.truncate(100)  # half a file on disk, then the device is full
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    else:
        real_write = type(js).write_text

        def json_fails(self, *a, **k):
            if ".json.tmp-" in self.name:
                real_write(self, "{\"model\": ")
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
            return real_write(self, *a, **k)

        monkeypatch.setattr(type(js), "write_text", json_fails)
    with pytest.raises(OSError):
        save_export(new_model, tmp_path / "student", {"dataset": "synthetic"})
    monkeypatch.undo()
    assert st.read_bytes() == old_st and js.read_text() == old_js and _leftovers(tmp_path) == []
    loaded, meta = load_export(st)
    assert meta == json.loads(old_js)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), old_model.state_dict().values()))


def test_a_figure_that_fails_to_save_leaves_the_old_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from lakd.report.figures import _save

    out = tmp_path / "figures" / "roles.png"
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    _save(fig, out, dpi=20)
    old = out.read_bytes()
    assert old.startswith(b"\x89PNG")

    def savefig_fails(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise RuntimeError("renderer died")

    monkeypatch.setattr(Figure, "savefig", savefig_fails)
    with pytest.raises(RuntimeError, match="renderer died"):
        _save(fig, out, dpi=20)
    assert out.read_bytes() == old and _leftovers(tmp_path) == []
