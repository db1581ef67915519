"""check_environment: every user error of `lakd train` is one line naming the thing at fault, exit 2, and
nothing is written (config.yaml included), checked before the first file is created."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket

import pytest
import torch

from lakd.cli import main

from .helpers import tiny_args


def _train(tmp_path, shards, *over, stage="baseline", name="r"):
    return main(["train", "--stage", stage, "--config", "synthetic",
                 *tiny_args(shards, tmp_path / "runs", name), *over])


def _refused(capsys, code, expect: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expect in err, err
    assert len(err.splitlines()) == 1, err
    return err


def _copy_manifest(shards, tmp_path, split="train", change=None) -> str:
    """A copy of a split's manifest in tmp_path whose shard entries point at the real shards."""
    doc = json.loads((shards / f"synthetic-{split}.manifest.json").read_text())
    doc["shards"] = [str(shards / s) for s in doc["shards"]]
    doc["sha256"] = {str(shards / k): v for k, v in doc["sha256"].items()}
    if change is not None:
        doc = change(doc)
    path = tmp_path / f"copy-{split}.manifest.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("override, expect", [
    ("optim.lr=.inf", "config key 'optim.lr': expected a finite number, got inf"),
    ("noise.scale=.nan", "config key 'noise.scale': expected a finite number"),
    ("model.options={foo: 1}", "config key 'model.options': unknown option(s) foo"),
    ("model.width=8", "config key 'model.width': width must be a number in (0, 4]"),
    ("data.num_workers=65", "config key 'data.num_workers': 48 training samples cannot feed 1 process(es) x 65"),
])
def test_values_checked_against_registries_and_data(tmp_path, shards, capsys, override, expect):
    _refused(capsys, _train(tmp_path, shards, override), expect)
    assert not (tmp_path / "runs").exists()


def test_weights_that_are_not_weights_or_do_not_fit(tmp_path, shards, capsys):
    junk = tmp_path / "passwd"
    junk.write_text("root:x:0:0:root:/root:/bin/bash\n")
    _refused(capsys, _train(tmp_path, shards, f"model.pretrained={junk}"), "config key 'model.pretrained': weight file")
    from lakd.models import build_model

    other = tmp_path / "w.pt"
    torch.save(build_model("deeplabv3", "resnet18", 8, width=0.25).state_dict(), other)
    _refused(capsys, _train(tmp_path, shards, f"model.pretrained={other}"), f"{other} does not fit")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("change, expect", [
    (lambda d: d and "{\"format\": \"lakd-shards/1\", \"data", "not a JSON manifest"),
    (lambda d: {"format": d["format"], "dataset": "synthetic"}, "missing field(s)"),
    (lambda d: {**d, "total": "lots"}, "manifest field 'total' must be an integer"),
    (lambda d: {**d, "shards": [], "samples_per_shard": [], "total": 0}, "lists no samples"),
    (lambda d: {**d, "dataset": "cityscapes", "num_classes": 19}, "holds dataset 'cityscapes'"),
    (lambda d: {**d, "num_classes": 19}, "has 19 classes, the config has 8"),
    (lambda d: {**d, "shards": [str(d["shards"][0]) + ".gone"] * len(d["shards"])}, "none of the 6 shards"),
])
def test_bad_train_manifest(tmp_path, shards, capsys, change, expect):
    bad = _copy_manifest(shards, tmp_path, change=change)
    err = _refused(capsys, _train(tmp_path, shards, f"data.train_manifest={bad}"), expect)
    assert err.startswith("lakd train: error: train shards: ") and bad in err
    assert not (tmp_path / "runs").exists()


def test_unreadable_val_set_is_refused_before_training(tmp_path, shards, capsys):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    for tar in shards.glob("synthetic-val-*.tar"):
        (garbage / tar.name).write_bytes(os.urandom(2048))
    shutil.copy(shards / "synthetic-val.manifest.json", garbage)
    _refused(capsys, _train(tmp_path, shards, f"data.val_manifest={garbage / 'synthetic-val.manifest.json'}"),
             "none of the 2 shards")
    assert not (tmp_path / "runs").exists()


def test_pipe_entries_need_the_users_consent(tmp_path, shards, capsys):
    marker = tmp_path / "ran"

    def pipe(doc):
        doc["shards"][0] = f"pipe:touch {marker}; cat {doc['shards'][0]}"
        return doc

    bad = _copy_manifest(shards, tmp_path, change=pipe)
    _refused(capsys, _train(tmp_path, shards, f"data.train_manifest={bad}"), "data.allow_pipe=true")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_runs_dir_that_cannot_be_written(tmp_path, shards, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(capsys, main(["train", "--stage", "baseline", "--config", "synthetic",
                           *tiny_args(shards, afile, "r")]), "config key 'run.runs_dir':")
    assert afile.read_text() == "x"


@pytest.mark.parametrize("err", [errno.EROFS, errno.EPERM, errno.EACCES])
def test_runs_dir_on_a_read_only_or_immutable_folder(tmp_path, shards, capsys, monkeypatch, err):
    """A read-only mount (EROFS), `chattr +i` (EPERM) or permissions (EACCES): the probe file cannot be made
    (simulated: the tests run as root, where only a real mount or attribute would show it)."""
    import tempfile

    def mkstemp(*a, **kw):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    err_line = _refused(capsys, _train(tmp_path, shards), "config key 'run.runs_dir': cannot create files in ")
    assert os.strerror(err) in err_line
    assert not (tmp_path / "runs").exists()


def test_teacher_export_whose_weights_do_not_fit_its_metadata(tmp_path, shards, capsys):
    from lakd.models import build_model
    from lakd.models.export import save_export

    runs = tmp_path / "runs"
    st, js = save_export(build_model("deeplabv3", "resnet18", 8, width=0.125), tmp_path / "t" / "teacher")
    other, _ = save_export(build_model("deeplabv3", "resnet18", 8, width=0.25), tmp_path / "o" / "teacher")
    shutil.copy(other, st)
    _refused(capsys, _train(tmp_path, shards, f"teacher.export={st}", stage="student"),
             "does not fit the model of its metadata")
    assert not runs.exists()


@pytest.mark.parametrize("noise, expect", [
    ({"code_dim": 2, "colour": 1}, "'noise' settings: unknown label_noise setting(s): colour"),
    ({"code_dim": 3}, "'noise' code_dim 3 but label_channels 2"),
    ("loud", "'noise' settings must be a mapping, got str"),
])
def test_teacher_export_with_a_bad_noise_block_is_refused_before_anything_is_written(tmp_path, shards, capsys,
                                                                                     noise, expect):
    from lakd.models import build_model
    from lakd.models.export import save_export

    runs = tmp_path / "runs"
    meta = {"num_classes": 8, "label_channels": 2, "noise": noise}
    st, _ = save_export(build_model("deeplabv3", "resnet18", 8, 5, width=0.125), tmp_path / "t" / "teacher", meta)
    err = _refused(capsys, _train(tmp_path, shards, f"teacher.export={st}", stage="student"),
                   expect)
    assert "cannot use the teacher export" in err and str(st.with_suffix(".json")) in err
    assert not runs.exists()


def test_a_refused_rerun_keeps_the_runs_config(tmp_path, shards, capsys):
    stage = tmp_path / "runs" / "r" / "baseline"
    (stage / "checkpoints" / "step_00000002").mkdir(parents=True)
    (stage / "checkpoints" / "step_00000002" / "lakd_meta.json").write_text(json.dumps(
        {"complete": True, "tag": "step_00000002", "step": 2, "world_size": 1, "config_hash": "0123456789abcdef"}))
    (stage / "config.yaml").write_text("the run's own settings\n")
    _refused(capsys, _train(tmp_path, shards), "was written with a different configuration")
    assert (stage / "config.yaml").read_text() == "the run's own settings\n"
    _refused(capsys, _train(tmp_path, shards, "checkpoint.resume=false"), "checkpoint.resume=false")


def test_second_run_on_a_locked_stage_dir_is_refused(tmp_path, shards, capsys):
    from lakd.engine.runlock import RunLock

    stage = tmp_path / "runs" / "r" / "baseline"
    stage.mkdir(parents=True)
    holder = RunLock(stage)
    assert holder.acquire() is None
    try:
        assert RunLock(stage).acquire().startswith(f"{stage} is in use by another run (pid {os.getpid()} on host "
                                                   f"{socket.gethostname()}")
        err = _refused(capsys, _train(tmp_path, shards), "is in use by another run")
        assert f"pid {os.getpid()}" in err
        assert not (stage / "config.yaml").exists()
    finally:
        holder.release()
    lock = RunLock(stage)
    assert lock.acquire() is None  # released: free again
    lock.release()
    (stage / ".lock").write_text("[garbage")  # a damaged lock file is no lock: flock decides, not the content
    assert lock.acquire() is None
    lock.release()


def test_a_file_system_without_locks_runs_with_a_warning(tmp_path, monkeypatch):
    import fcntl

    from lakd.engine.runlock import RunLock

    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = RunLock(tmp_path)
    assert lock.acquire() is None and "cannot lock" in lock.unsupported and "No locks available" in lock.unsupported
    lock.release()


def test_disk_full_is_one_line_naming_the_file(tmp_path, shards, capsys, monkeypatch):
    from lakd.engine import stage as stage_module
    from lakd.io import atomic_write_bytes, naming_disk_full

    target = tmp_path / "config.yaml"

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as exc:
        atomic_write_bytes(target, b"x")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone, not left to fill the disk
    monkeypatch.undo()
    # a writer that does not say ENOSPC (torch's zip writer: "iostream error") on a full file system
    full_fs = os.statvfs_result((4096, 4096, 2560, 0, 0, 1000, 10, 10, 0, 255))  # 0 blocks available
    monkeypatch.setattr(os, "statvfs", lambda p: full_fs)
    with pytest.raises(OSError) as exc, naming_disk_full(tmp_path / "step_00000006"):
        raise RuntimeError("basic_ios::clear: iostream error")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "step_00000006")

    def full(cfg):
        raise exc.value

    monkeypatch.setattr(stage_module, "run_stage", full)
    code = _train(tmp_path, shards)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"cannot write {tmp_path / 'step_00000006'}: no space left on device" in err


def test_ctrl_c_anywhere_is_one_line_and_130(tmp_path, shards, capsys, monkeypatch):
    from lakd.engine import stage as stage_module

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage_module, "run_stage", interrupted)
    code = _train(tmp_path, shards)
    err = capsys.readouterr().err.strip()
    assert code == 130 and len(err.splitlines()) == 1
    assert "run the same command again to resume" in err and str(tmp_path / "runs" / "r" / "baseline") in err
    monkeypatch.setattr("lakd.commands.eval.run", interrupted)
    assert main(["eval", "x", "--shards", "y"]) == 130
    assert capsys.readouterr().err.strip() == "lakd eval: interrupted"


@pytest.mark.parametrize("text, expect", [
    ('{"stage": "baseline", "eval": {"image": {"miou": 0.5', "not valid JSON (Expecting"),
    ("[1, 2]", "not a stage result (no 'eval' entry)"),
])
def test_an_unusable_result_json_is_named_and_left_alone(tmp_path, shards, capsys, text, expect):
    from lakd.rundir import StageDir

    sd = StageDir.at(tmp_path / "runs", "r", "baseline")
    sd.path.mkdir(parents=True)
    sd.result.write_text(text)
    err = _refused(capsys, _train(tmp_path, shards), expect)
    assert str(sd.result) in err and "remove it to" in err
    assert sorted(p.name for p in sd.path.iterdir()) == ["result.json"] and sd.result.read_text() == text
