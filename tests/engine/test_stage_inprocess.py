"""run_stage used in-process (as submitit jobs and the sweep use it): the KD row (a student distilled from an
image-only teacher exported by a baseline stage of another run), gradient accumulation + clipping + bf16
autocast, a finished stage returned without training, a changed config refused."""
from __future__ import annotations

import errno
import json

import pytest

from lakd.config import ConfigError, load_config
from lakd.engine.stage import run_stage

from .helpers import LAUNCHER_VARS, tiny_args

pytestmark = pytest.mark.slow


def test_kd_row_from_a_baseline_export(shards, tmp_path, monkeypatch, capsys):
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    import torch

    from lakd.models import build_model

    runs = tmp_path / "runs"
    small = {"train.iters": 4, "eval.every": 0, "checkpoint.every": 4}
    init = tmp_path / "init.pt"  # whole-model weights in lakd's own layout, as model.pretrained
    torch.save(build_model("fcn", "plaincnn", 8, width=0.25).state_dict(), init)  # the synthetic preset's model
    base_cfg = load_config("synthetic", tiny_args(
        shards, runs, "imgonly", **small, **{"train.micro_batch_size": 2, "train.grad_clip": 1.0,
                                             "train.precision": "bf16", "model.pretrained": str(init)}),
        stage="baseline")
    base = run_stage(base_cfg)
    start = capsys.readouterr().err
    assert f"initialised from {init} (lakd layout, " in start and "from scratch" not in start
    assert base["steps"] == 4 and base["teacher"] is None
    # result.json says where the weights started: a whole model makes this stage a fine-tuned control (report)
    saved = json.loads((runs / "imgonly" / "baseline" / "result.json").read_text())
    assert saved["init"]["from"] == str(init) and saved["init"]["scope"] == "model" and saved["seed"] == 0
    lines = [json.loads(x) for x in (runs / "imgonly" / "baseline" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]  # 2 micro-batches per step

    export = runs / "imgonly" / "baseline" / "baseline.safetensors"
    kd_cfg = load_config("synthetic", tiny_args(shards, runs, "kd", **small, **{"teacher.export": str(export)}),
                         stage="student")
    kd = run_stage(kd_cfg)
    assert kd["teacher"] == {"export": str(export), "label_channels": 0}
    assert json.loads((runs / "kd" / "student" / "result.json").read_text())["init"] is None  # from scratch
    terms = json.loads((runs / "kd" / "student" / "metrics.jsonl").read_text().splitlines()[0])["terms"]
    assert "kd" in terms

    # finished: returned as is, nothing trained again
    mtime = (runs / "kd" / "student" / "result.json").stat().st_mtime
    capsys.readouterr()
    again = run_stage(kd_cfg)
    assert again["eval"] == kd["eval"] and (runs / "kd" / "student" / "result.json").stat().st_mtime == mtime
    said = capsys.readouterr().err.strip()
    assert said.startswith(f"lakd train: already finished: {runs / 'kd' / 'student' / 'result.json'}, image mIoU ")
    # a different experiment under the same run name is refused, not mixed in
    changed = load_config("synthetic", tiny_args(shards, runs, "kd", **small, **{
        "teacher.export": str(export), "optim.lr": 0.5}), stage="student")
    with pytest.raises(ConfigError, match="different configuration"):
        run_stage(changed)


def test_full_disk_rerun_frees_the_interrupted_save_before_writing(shards, tmp_path, monkeypatch):
    """A save killed by a full disk leaves an incomplete checkpoint; the re-run removes it before it writes
    config.yaml (else the write fails again on the still-full disk), and a failed write leaves no temp file."""
    from lakd.engine import stage as stage_module

    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    cfg = load_config("synthetic", tiny_args(shards, tmp_path / "runs", "full"), stage="baseline")
    incomplete = cfg.stage_dir / "checkpoints" / "step_00000006"
    incomplete.mkdir(parents=True)
    (incomplete / "mp_rank_00_model_states.pt").write_bytes(b"PK truncated")
    seen = []
    write = stage_module.atomic_write_bytes

    def full_disk(path, data):
        if path.name == "config.yaml":
            seen.append(incomplete.exists())
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write(path, data)

    monkeypatch.setattr(stage_module, "atomic_write_bytes", full_disk)
    with pytest.raises(OSError) as exc:
        run_stage(cfg)
    assert seen == [False] and exc.value.filename == str(cfg.stage_dir / "config.yaml")


def test_shards_of_undecodable_samples_are_one_line(shards, tmp_path, monkeypatch, capsys):
    """Shards that open but hold no decodable sample (found by the workers, not at start-up): one line."""
    import io
    import tarfile

    from lakd.cli import main

    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    doc = json.loads((shards / "synthetic-train.manifest.json").read_text())
    for name, count in zip(doc["shards"], doc["samples_per_shard"]):
        with tarfile.open(tmp_path / name, "w") as tf:
            for i in range(count):
                for field in ("jpg", "label.png"):
                    data = b"not an image"
                    info = tarfile.TarInfo(f"{i:08d}.{field}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    (tmp_path / "synthetic-train.manifest.json").write_text(json.dumps(doc))
    code = main(["train", "--stage", "baseline", "--config", "synthetic",
                 *tiny_args(shards, tmp_path / "runs", "bad", **{"data.num_workers": 1}),
                 f"data.train_manifest={tmp_path / 'synthetic-train.manifest.json'}"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("lakd train: error: lakd.data: no readable sample in a whole epoch")
