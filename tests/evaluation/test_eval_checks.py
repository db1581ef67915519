"""`lakd eval`: every option and output folder is checked before inference (one line, exit 2); an evaluation
over nothing readable is an error, not a score; manifests' pipe: entries need --allow-pipe; a pixel cap."""
from __future__ import annotations

import io
import json
import os

import pytest
import torch
from PIL import Image

from lakd.cli import main
from lakd.data import transforms
from lakd.data.build import build_shards
from lakd.models import build_model
from lakd.models.export import save_export


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalchecks")
    manifest = build_shards("synthetic", "val", out / "shards", num_samples=3, image_size=32, seed=0,
                            samples_per_shard=2, workers=1, progress=False)
    torch.manual_seed(0)
    save_export(build_model("fcn", "resnet18", 8, width=0.125), out / "model", {"dataset": "synthetic"})
    return out / "model", manifest


def _eval(capsys, setup, *extra):
    export, manifest = setup
    code = main(["eval", str(export), "--shards", str(manifest), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.mark.parametrize("extra, expect", [
    (["--stride", "0"], "--stride must be >= 1, got 0"),
    (["--crop-size", "0"], "--crop-size must be >= 1"),
    (["--crop-size", "-5"], "--crop-size must be >= 1, got -5"),
    (["--max-images", "-1"], "--max-images must be >= 1, got -1"),
    (["--scales", "-1"], "--scales must be positive numbers"),
    (["--scales", "0", "1"], "--scales must be positive numbers"),
    (["--device", "tpu9"], "--device tpu9: not a torch device"),
    (["--max-pixels", "0"], "--max-pixels must be >= 1"),
])
def test_bad_values_are_one_line_exit_2(capsys, setup, extra, expect):
    code, out, err = _eval(capsys, setup, *extra)
    assert code == 2 and expect in err and len(err.splitlines()) == 1, err
    assert out == ""  # refused before inference: no table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu(capsys, setup):
    code, _, err = _eval(capsys, setup, "--device", "cuda")
    assert code == 2 and "torch sees no CUDA device" in err


def test_outputs_checked_before_inference(tmp_path, capsys, setup):
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "adir").mkdir()
    for extra, expect in ((["--out", str(tmp_path / "adir")], "is a folder"),
                          (["--out", str(afile / "r.json")], "is not a folder"),
                          (["--save-png", str(afile)], "is not a folder"),
                          (["--save-png", str(afile / "sub")], "is not a folder")):
        code, out, err = _eval(capsys, setup, *extra)
        assert code == 2 and expect in err and len(err.splitlines()) == 1, err
        assert out == ""
    assert afile.read_text() == "x" and list((tmp_path / "adir").iterdir()) == []


def test_nothing_readable_is_an_error_not_a_score(tmp_path, capsys, setup):
    export, manifest = setup
    doc = json.loads(manifest.read_text())
    for name in doc["shards"]:
        (tmp_path / name).write_bytes(os.urandom(3000))
    (tmp_path / manifest.name).write_text(json.dumps(doc))
    out_json = tmp_path / "r.json"
    code = main(["eval", str(export), "--shards", str(tmp_path / manifest.name), "--out", str(out_json)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no readable labelled image" in err[-1]
    assert not out_json.exists()


def test_pipe_entries_need_allow_pipe(tmp_path, capsys, setup):
    export, manifest = setup
    doc = json.loads(manifest.read_text())
    marker = tmp_path / "ran"
    doc["shards"] = [f"pipe:touch {marker}; cat {manifest.parent / s}" for s in doc["shards"]]
    bad = tmp_path / manifest.name
    bad.write_text(json.dumps(doc))
    code = main(["eval", str(export), "--shards", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--allow-pipe" in err and "data.allow_pipe" not in err and not marker.exists()
    assert main(["eval", str(export), "--shards", str(bad), "--allow-pipe"]) == 0 and marker.exists()


def test_pixel_cap(capsys, setup, monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    with pytest.raises(transforms.CorruptSample, match="40x30 pixels is larger than the cap of 1000"):
        transforms.decode_image(buf.getvalue(), max_pixels=1000)
    assert transforms.decode_image(buf.getvalue()).size == (40, 30)
    # every 32x32 image is over a cap of 1000 pixels: skipped and counted, so nothing is left to score
    code, _, err = _eval(capsys, setup, "--max-pixels", "1000")
    assert code == 2 and "no readable labelled image" in err
    assert _eval(capsys, setup)[0] == 0  # the cap was this command's, not left behind in the process


@pytest.mark.distributed
def test_srun_ranks_split_the_set(tmp_path, setup):
    """Two tasks of an srun step (no torchrun variables): each evaluates its part, rank 0 reports the sum."""
    import subprocess
    import sys

    from lakd.net import free_port
    from tests.engine.helpers import base_env

    export, manifest = setup
    single = tmp_path / "single.json"
    assert main(["eval", str(export), "--shards", str(manifest), "--out", str(single)]) == 0
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = base_env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_ID="0", SLURM_JOB_ID="1",
                       SLURM_STEP_NUM_TASKS="2", SLURM_STEP_NUM_NODES="1", SLURM_STEP_NODELIST="127.0.0.1",
                       MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-m", "lakd.cli", "eval", str(export), "--shards",
                                       str(manifest), "--out", str(tmp_path / "two.json")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "labelled pixels" in outs[0] and "labelled pixels" not in outs[1]  # one report, by rank 0
    one, two = (json.loads(p.read_text())["eval"]["image"] for p in (single, tmp_path / "two.json"))
    assert two["pixels"] == one["pixels"] and two["miou"] == pytest.approx(one["miou"])
