"""Faults of real file systems, not simulated ones: a full disk (a small tmpfs: out of bytes, or of inodes),
a read-only mount and `chattr +i`, under `lakd train` (one and two processes), `shards build`, `export`,
`predict` and `eval`.

Promises checked: a full disk is one line naming the file ("no space left"), exit 1 (README "Exit status"),
no traceback, nothing half-written under a final name, `latest` names the last complete checkpoint, and the
same command resumes once there is space and ends with the weights of an uninterrupted run. A folder that
cannot be written is one line, exit 2, before any work, nothing written.

Needs root and `mount` (CI and `make test` run as root); each test mounts its own file systems under its
tmp_path and always unmounts them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lakd.cli import main

from .helpers import REPO, assert_same_weights, base_env, launch, tiny_args

if os.geteuid() != 0 or shutil.which("mount") is None or shutil.which("umount") is None:
    pytest.skip("mounting a tmpfs needs root and mount/umount", allow_module_level=True)

PAGE = 4096


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done


@pytest.fixture(scope="module", autouse=True)
def _can_mount(tmp_path_factory):
    """Root without the right to mount (a container without CAP_SYS_ADMIN): skip before any reference run."""
    point = tmp_path_factory.mktemp("mount-probe")
    done = _run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    _run(["umount", str(point)])


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, size)`` mounts a tmpfs of ``size`` (mount's syntax: 300k, 4m) at ``tmp_path/name``; every
    mount is undone when the test ends, whatever happened (immutable attributes do not stop an unmount)."""
    mounted: list[Path] = []

    def mount(name: str, size: str, *, attributes: bool = False) -> Path:
        """``attributes``: a file system that keeps `chattr +i` (tmpfs does since Linux 6.0; else a small
        ext4 image on a loop device, when this machine can make one)."""
        point = tmp_path / name
        point.mkdir()
        done = _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)], check=False)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        if attributes and not _keeps_attributes(point):
            _run(["umount", str(point)])
            mounted.remove(point)
            image = tmp_path / f"{name}.ext4"
            with open(image, "wb") as f:
                f.truncate(16 << 20)
            done = _run(["mkfs.ext4", "-q", "-F", str(image)], check=False)
            if done.returncode == 0:
                done = _run(["mount", "-o", "loop", str(image), str(point)], check=False)
            if done.returncode:
                pytest.skip(f"no file system with `chattr +i` here (tmpfs lacks it; ext4 loop: "
                            f"{done.stderr.strip() or 'mkfs.ext4 failed'})")
            mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if _run(["umount", str(point)], check=False).returncode:
            _run(["umount", "-l", str(point)])  # busy (a leftover process): detach it all the same


def remount(point: Path, options: str) -> None:
    _run(["mount", "-o", f"remount,{options}", str(point)])


def _keeps_attributes(point: Path) -> bool:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    probe = point / ".attr-probe"
    probe.touch()
    kept = _run(["chattr", "+i", str(probe)], check=False).returncode == 0
    _run(["chattr", "-i", str(probe)], check=False)
    probe.unlink()
    return kept


def immutable(path: Path) -> None:
    _run(["chattr", "+i", str(path)])


def _pages_of(path: Path) -> int:
    return -(-path.stat().st_size // PAGE) * PAGE


def pages(folder: Path) -> int:
    """Bytes a tmpfs needs to hold the files under ``folder`` (each file takes whole pages)."""
    return sum(_pages_of(p) for p in folder.rglob("*") if p.is_file())


def snapshot(folder: Path) -> dict:
    """Every entry with its file's size and time (a folder's own time moves with the write-probe file)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an interrupted write."""
    return [str(p) for p in folder.rglob("*.tmp-*")]


def error_line(output: str, command: str) -> str:
    """The single error line of ``output``; no traceback, no second error line."""
    assert "Traceback" not in output and "Exception ignored" not in output, output
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"lakd {command}: error: "), output
    return errors[0]


# ------------------------------------------------------------------------------------ lakd train: disk full
ARGS = ["--stage", "baseline", "--config", "synthetic"]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted run on the ordinary disk: its final weights, and its files' sizes to size the tmpfs."""
    runs = tmp_path_factory.mktemp("ref-runs")
    run = launch(1, [*ARGS, *tiny_args(shards, runs, "ref")], single=True)
    assert run.codes == [0], run.text
    return runs / "ref" / "baseline"


@pytest.fixture(scope="module")
def reference2(shards, tmp_path_factory) -> Path:
    """The same with two processes (ZeRO 1)."""
    runs = tmp_path_factory.mktemp("ref2-runs")
    run = launch(2, [*ARGS, *tiny_args(shards, runs, "ref", **{"train.zero_stage": 1})])
    assert run.codes == [0, 0], run.text
    return runs / "ref" / "baseline"


def _train(shards, runs: Path, world: int = 1):
    return launch(world, [*ARGS, *tiny_args(shards, runs, "r", **{"train.zero_stage": world - 1})],
                  single=world == 1)


def _resume_and_compare(shards, runs: Path, point: Path, reference: Path, start: int, world: int = 1) -> None:
    """After freeing space the same command resumes at ``start`` and ends like the uninterrupted run."""
    remount(point, "size=64m")
    again = _train(shards, runs, world)
    assert again.codes == [0] * world, again.text
    if start:
        assert f"resuming at step {start}" in again.outputs[0], again.text
    stage = runs / "r" / "baseline"
    assert_same_weights(reference / "baseline.safetensors", stage / "baseline.safetensors")
    ref, res = (json.loads((d / "result.json").read_text()) for d in (reference, stage))
    assert res["eval"] == ref["eval"] and res["steps"] == 6
    assert not leftovers(stage)


def test_disk_full_while_saving_a_checkpoint_then_resume(shards, reference, tmpfs):
    """Room for everything written up to the step-3 checkpoint plus half a checkpoint: the step-4 save fails."""
    ckpt = pages(reference / "checkpoints" / "step_00000004")
    before = pages(reference) - ckpt - sum(_pages_of(p) for p in [*reference.glob("baseline.*"),
                                                                    reference / "result.json"])
    point = tmpfs("runs", str(before + ckpt // 2))
    first = _train(shards, point)
    assert first.codes == [1], first.text
    line = error_line(first.outputs[0], "train")
    stage = point / "r" / "baseline"
    assert f"{stage / 'checkpoints'}/" in line and "no space left on device" in line, line
    assert "run the same command again to resume" in line
    ckpts = stage / "checkpoints"
    latest = (ckpts / "latest").read_text().strip()
    assert (ckpts / latest / "lakd_meta.json").is_file()  # the pointer names a complete checkpoint ...
    done = sorted(p.parent.name for p in ckpts.glob("step_*/lakd_meta.json"))
    assert done[-1] == latest and latest < "step_00000006"  # ... the newest one, and the run stopped early
    assert not (stage / "result.json").exists() and not (stage / "baseline.safetensors").exists()
    _resume_and_compare(shards, point, point, reference, int(latest.split("_")[1]))


def test_disk_full_while_writing_the_final_export_then_resume(shards, reference, tmpfs):
    """Room for everything but half of the final weights: the export fails after the step-6 checkpoint."""
    export = _pages_of(reference / "baseline.safetensors")
    before = pages(reference) - sum(_pages_of(p) for p in [*reference.glob("baseline.*"), reference / "result.json"])
    point = tmpfs("runs", str(before + export // 2))
    first = _train(shards, point)
    assert first.codes == [1], first.text
    stage = point / "r" / "baseline"
    line = error_line(first.outputs[0], "train")
    assert f"cannot write {stage / 'baseline.safetensors'}: no space left on device" in line, line
    assert (stage / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    assert not list(stage.glob("baseline.*")) and not (stage / "result.json").exists()
    assert not leftovers(stage)
    _resume_and_compare(shards, point, point, reference, 6)


@pytest.mark.parametrize("share", [0.002, 0.1, 0.35, 0.6, 0.95])
def test_disk_full_anywhere_then_resume(shards, reference, tmpfs, share):
    """A disk that holds ``share`` of what the run writes fills somewhere (the config, the logs, a checkpoint,
    the best export, the final export): wherever, one line names a file of the run, nothing temporary stays,
    `latest` (if any) names a complete checkpoint, and the run finishes like the reference after freeing."""
    point = tmpfs("runs", str(max(PAGE, int(share * pages(reference)) // PAGE * PAGE)))
    first = _train(shards, point)
    assert first.codes == [1], first.text
    stage = point / "r" / "baseline"
    line = error_line(first.outputs[0], "train")
    assert f"cannot write {stage}/" in line and "no space left on device" in line, line
    assert not leftovers(point) and not (stage / "result.json").exists()
    latest = stage / "checkpoints" / "latest"
    if latest.exists():
        assert (stage / "checkpoints" / latest.read_text().strip() / "lakd_meta.json").is_file()
    start = int(latest.read_text().strip().split("_")[1]) if latest.exists() else 0
    _resume_and_compare(shards, point, point, reference, start)


def test_disk_already_full_at_the_start(shards, reference, tmpfs):
    """Not a byte free before the first write: the first file the run writes is named (the run-dir probe
    passes: an empty file needs no space); deleting something is enough for the same command to run."""
    point = tmpfs("runs", "1m")
    filler = point / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):
        f.write(b"\0" * (2 << 20))
    first = _train(shards, point)
    assert first.codes == [1], first.text
    line = error_line(first.outputs[0], "train")
    assert f"cannot write {point / 'r' / 'baseline'}/" in line and "no space left on device" in line, line
    filler.unlink()
    _resume_and_compare(shards, point, point, reference, 0)


def test_out_of_inodes_at_the_first_checkpoint_then_resume(shards, reference, tmpfs):
    """Bytes to spare but no inode left for the first checkpoint's folder or files (DeepSpeed reports a folder
    it could not make as a missing parent): named as a full disk; no checkpoint is complete, so the re-run
    starts over."""
    made_before = [p for p in reference.rglob("*") if not p.is_relative_to(reference / "checkpoints")
                   and not p.name.startswith("baseline") and p.name != "result.json"]  # logs, config, lock
    point = tmpfs("runs", "64m")
    # + the root, r/, r/baseline/ and checkpoints/: the step-2 folder finds none (DeepSpeed makes it)
    remount(point, f"nr_inodes={len(made_before) + 4}")
    first = _train(shards, point)
    assert first.codes == [1], first.text
    stage = point / "r" / "baseline"
    line = error_line(first.outputs[0], "train")
    assert f"cannot write {stage / 'checkpoints'}/step_" in line and "no space left on device" in line, line
    assert not (stage / "checkpoints" / "latest").exists()
    remount(point, "nr_inodes=10000")
    _resume_and_compare(shards, point, point, reference, 0)


@pytest.mark.slow
@pytest.mark.distributed
def test_disk_full_while_two_processes_save_a_checkpoint(shards, reference2, tmpfs):
    """ZeRO 1: every rank writes its optimizer partition into the same folder. Each rank either names the file
    it could not write or says that its peer stopped; `latest` stays complete; the re-run ends like the
    reference."""
    ckpt = pages(reference2 / "checkpoints" / "step_00000004")
    before = pages(reference2) - ckpt - sum(_pages_of(p) for p in [*reference2.glob("baseline.*"),
                                                                   reference2 / "result.json"])
    point = tmpfs("runs", str(before + ckpt // 2))
    first = _train(shards, point, world=2)
    assert first.codes == [1, 1], first.text
    stage = point / "r" / "baseline"
    lines = [error_line(out, "train") for out in first.outputs]
    named = [line for line in lines if f"cannot write {stage / 'checkpoints'}/" in line and "no space left" in line]
    assert named and all(line in named or "another process of this job stopped" in line for line in lines), lines
    ckpts = stage / "checkpoints"
    latest = (ckpts / "latest").read_text().strip()
    done = sorted(p.parent.name for p in ckpts.glob("step_*/lakd_meta.json"))
    assert done[-1] == latest and latest < "step_00000006"
    _resume_and_compare(shards, point, point, reference2, int(latest.split("_")[1]), world=2)


@pytest.mark.slow
@pytest.mark.distributed
def test_disk_full_on_rank_0_only_with_two_processes(shards, reference2, tmpfs):
    """Only rank 0 writes the final export: it names the file; rank 1, waiting for it, says in one line that
    a peer stopped (not gloo's traceback); both exit 1, and the re-run with space ends like the reference."""
    export = _pages_of(reference2 / "baseline.safetensors")
    before = pages(reference2) - sum(_pages_of(p) for p in [*reference2.glob("baseline.*"),
                                                             reference2 / "result.json"])
    point = tmpfs("runs", str(before + export // 2))
    first = _train(shards, point, world=2)
    assert first.codes == [1, 1], first.text
    stage = point / "r" / "baseline"
    assert f"cannot write {stage / 'baseline.safetensors'}: no space left" in error_line(first.outputs[0], "train")
    assert "another process of this job stopped" in error_line(first.outputs[1], "train")
    assert (stage / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    assert not list(stage.glob("baseline.*")) and not leftovers(stage)
    _resume_and_compare(shards, point, point, reference2, 6, world=2)


# ------------------------------------------------------------------------- other commands: disk full
def _cli(*args: str) -> subprocess.CompletedProcess:
    """`lakd ARGS` in a child process (torch's writers have aborted whole processes on a full disk)."""
    return subprocess.run([sys.executable, "-m", "lakd.cli", *args], capture_output=True, text=True,
                          env=base_env(), cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    import torch

    from lakd.models import build_model
    from lakd.models.export import save_export

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("exp") / "student"
    save_export(build_model("fcn", "resnet18", 8, in_channels=3, width=0.125).eval(), base,
                {"dataset": "synthetic"})
    return base


@pytest.fixture
def images(tmp_path) -> Path:
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _build(out: Path, samples: int) -> subprocess.CompletedProcess:
    return _cli("shards", "build", "synthetic", "--split", "train", "--out", str(out), "--num-samples",
                str(samples), "--image-size", "64", "--samples-per-shard", "8", "--workers", "1", "--no-progress")


def test_disk_full_during_shards_build_keeps_the_earlier_build(tmpfs):
    """A rebuild that fills the disk leaves the earlier build as it was (shards and manifest agree), and no
    shard or temporary file of its own; with space, the same command completes."""
    point = tmpfs("shards", "120k")
    assert _build(point, 8).returncode == 0  # one shard: the earlier, complete build
    before = {p.name: p.read_bytes() for p in point.iterdir()}
    full = _build(point, 64)
    assert full.returncode == 1, full.stderr
    line = error_line(full.stderr, "shards")
    assert f"cannot write {point}/synthetic-train-0000" in line and "no space left on device" in line, line
    assert {p.name: p.read_bytes() for p in point.iterdir()} == before
    assert main(["shards", "verify", str(point / "synthetic-train.manifest.json"), "--no-progress"]) == 0
    remount(point, "size=8m")
    assert _build(point, 64).returncode == 0
    assert json.loads((point / "synthetic-train.manifest.json").read_text())["total"] == 64
    assert not leftovers(point)


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_disk_full_during_export(student, tmpfs, fmt):
    point = tmpfs("out", "64k")
    out = point / ("m.pt" if fmt == "torchscript" else "m.pt2")
    args = ["export", str(student), "--format", fmt, "--out", str(out), "--sample-size", "32"]
    full = _cli(*args)
    assert full.returncode == 1, full.stderr  # not -6: torch's zip writer must not abort the process
    line = error_line(full.stderr, "export")
    assert f"cannot write {out}: no space left on device" in line, line
    assert not list(point.iterdir())  # no file under the final name, no temporary file
    remount(point, "size=8m")
    assert _cli(*args).returncode == 0 and out.is_file() and not leftovers(point)


def test_disk_full_during_predict(student, images, tmpfs, capsys):
    """Stops at the first PNG that does not fit, naming it; every PNG left is whole."""
    from PIL import Image

    point = tmpfs("out", "48k")
    code = main(["predict", str(student), str(images), "--out", str(point / "pred"), "--no-progress"])
    line = error_line(capsys.readouterr().err, "predict")
    assert code == 1 and f"cannot write {point / 'pred'}/" in line and "no space left on device" in line
    written = list(point.rglob("*.png"))
    assert written and len(written) < 12 and not leftovers(point)
    for png in written:
        with Image.open(png) as im:
            im.load()


def test_disk_full_during_eval_outputs(shards, student, tmpfs, capsys):
    """`lakd eval --save-png` and `--out`: the first file that does not fit is named; PNGs left are whole."""
    from PIL import Image

    point = tmpfs("out", "12k")
    val = str(shards / "synthetic-val.manifest.json")
    code = main(["eval", str(student), "--shards", val, "--save-png", str(point / "png"),
                 "--out", str(point / "scores.json")])
    line = error_line(capsys.readouterr().err, "eval")
    assert code == 1 and f"cannot write {point}/" in line, line
    assert line.endswith("no space left on device (free some space and run the same command again)"), line
    assert not (point / "scores.json").exists() and not leftovers(point)
    for png in point.rglob("*.png"):
        with Image.open(png) as im:
            im.load()


def test_disk_full_during_a_weights_download_then_resume(tmpfs, monkeypatch, capsys):
    """`lakd weights fetch` (a file served from 127.0.0.1): the partial download stays, named; with space the
    same command resumes it with an HTTP Range request and the checksum holds."""
    from lakd.models import catalogue
    from tests.models.test_fetch import PAYLOAD, _entry, _Server

    server = _Server(PAYLOAD)  # 200 KB
    try:
        monkeypatch.setattr(catalogue, "load_catalogue", lambda path=None: {"tiny": _entry(server.url)})
        point = tmpfs("weights", "64k")
        args = ["weights", "fetch", "tiny", "--to", str(point), "--no-progress"]
        assert main(args) == 1
        line = error_line(capsys.readouterr().err, "weights")
        assert f"cannot write {point / 'tiny.pth.part'}: no space left on device" in line, line
        assert not (point / "tiny.pth").exists() and (point / "tiny.pth.part").stat().st_size > 0
        remount(point, "size=1m")
        assert main(args) == 0
        assert "resumed at" in capsys.readouterr().out and (point / "tiny.pth").read_bytes() == PAYLOAD
        assert "Range" in server.requests[-1]
    finally:
        server.close()


# --------------------------------------------------------------------- read-only and immutable folders
def _refused(code: int, capsys, command: str, expect: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    line = error_line(err, command)
    assert expect in line, err
    return line


def _train_into(shards, runs: Path) -> int:
    return main(["train", *ARGS, *tiny_args(shards, runs, "r")])


@pytest.fixture
def read_only(tmpfs) -> Path:
    point = tmpfs("ro", "1m")
    (point / "sub").mkdir()
    remount(point, "ro")
    return point


@pytest.mark.parametrize("where", ["", "sub", "sub/new/deeper"])
def test_runs_dir_on_a_read_only_mount(shards, read_only, capsys, where):
    line = _refused(_train_into(shards, read_only / where), capsys, "train",
                    "config key 'run.runs_dir': cannot create files in ")
    assert "Read-only file system" in line


def test_a_finished_run_on_a_read_only_mount_only_reads(shards, reference, tmpfs, capsys):
    """Nothing to write: the stage says it is finished, exit 0 (archived runs on read-only storage)."""
    point = tmpfs("ro", "16m")
    shutil.copytree(reference, point / "ref" / "baseline")
    remount(point, "ro")
    assert main(["train", *ARGS, *tiny_args(shards, point, "ref")]) == 0
    assert "lakd train: already finished: " in capsys.readouterr().err


def test_report_of_runs_on_a_read_only_mount(reference, tmpfs, tmp_path, capsys):
    """`lakd report` writes beside the runs by default: refused before any work there; --out elsewhere works;
    a full disk for the report is one named line."""
    point = tmpfs("ro", "16m")
    shutil.copytree(reference, point / "ref" / "baseline")
    remount(point, "ro")
    _refused(main(["report", str(point), "--examples", "0"]), capsys, "report",
             f"--out {point / 'report'}: cannot create files in {point}: Read-only file system")
    assert main(["report", str(point), "--examples", "0", "--out", str(tmp_path / "report")]) == 0
    capsys.readouterr()
    full = tmpfs("full", "8k")
    assert main(["report", str(point), "--examples", "0", "--out", str(full)]) == 1
    line = error_line(capsys.readouterr().err, "report")
    assert f"cannot write {full}/" in line and "no space left on device" in line, line
    assert not leftovers(full)


def test_outputs_on_a_read_only_mount(shards, student, images, read_only, capsys):
    _refused(main(["shards", "build", "synthetic", "--split", "val", "--out", str(read_only / "s"),
                   "--num-samples", "4", "--no-progress"]), capsys, "shards", "--out")
    _refused(main(["predict", str(student), str(images), "--out", str(read_only / "p"), "--no-progress"]),
             capsys, "predict", f"--out {read_only / 'p'}")
    _refused(main(["export", str(student), "--format", "torchscript", "--out", str(read_only / "m.pt")]),
             capsys, "export", "--out")
    val = str(shards / "synthetic-val.manifest.json")
    _refused(main(["eval", str(student), "--shards", val, "--out", str(read_only / "e.json")]),
             capsys, "eval", "--out")
    _refused(main(["eval", str(student), "--shards", val, "--save-png", str(read_only / "png")]),
             capsys, "eval", "--save-png")
    _refused(main(["demo", "--out", str(read_only / "demo")]), capsys, "demo", f"--out {read_only / 'demo'}")
    assert sorted(p.name for p in read_only.iterdir()) == ["sub"]


def test_immutable_runs_dir_and_entries_of_a_run_dir(shards, tmpfs, capsys):
    """`chattr +i` on the runs folder, or on an entry of an earlier run's stage folder that a run rewrites
    (the stage folder itself writable): refused before any work, nothing changed."""
    point = tmpfs("runs", "4m", attributes=True)
    frozen = point / "frozen"
    frozen.mkdir()
    immutable(frozen)
    _refused(_train_into(shards, frozen), capsys, "train", f"cannot create files in {frozen}: Operation not permitted")
    stage = point / "r" / "baseline"
    for entry in ("checkpoints", "tensorboard", "config.yaml", "metrics.jsonl", "checkpoints/latest"):
        (stage / "checkpoints").mkdir(parents=True, exist_ok=True)
        (stage / "tensorboard").mkdir(exist_ok=True)
        for name in ("config.yaml", "metrics.jsonl", "checkpoints/latest"):
            (stage / name).touch()
        immutable(stage / entry)
        before = snapshot(point)
        _refused(_train_into(shards, point), capsys, "train", str(stage / entry))
        assert snapshot(point) == before
        _run(["chattr", "-i", str(stage / entry)])


def test_immutable_output_folders(shards, student, images, tmpfs, capsys):
    point = tmpfs("mnt", "1m", attributes=True) / "out"
    point.mkdir()
    immutable(point)
    _refused(main(["shards", "build", "synthetic", "--split", "val", "--out", str(point), "--num-samples", "4",
                   "--no-progress"]), capsys, "shards", "Operation not permitted")
    _refused(main(["predict", str(student), str(images), "--out", str(point / "p"), "--no-progress"]),
             capsys, "predict", f"--out {point / 'p'}")
    _refused(main(["export", str(student), "--format", "torchscript", "--out", str(point / "m.pt")]),
             capsys, "export", "--out")
    val = str(shards / "synthetic-val.manifest.json")
    _refused(main(["eval", str(student), "--shards", val, "--save-png", str(point / "png")]),
             capsys, "eval", "--save-png")
    assert not list(point.iterdir())


def test_immutable_output_file_in_a_writable_folder(shards, student, tmpfs, capsys):
    """`--out FILE` that exists and is immutable: the final rename would fail after all the work."""
    point = tmpfs("mnt", "1m", attributes=True)
    for name in ("m.pt", "e.json"):
        (point / name).write_text("old")
        immutable(point / name)
    _refused(main(["export", str(student), "--format", "torchscript", "--out", str(point / "m.pt")]),
             capsys, "export", f"--out cannot replace {point / 'm.pt'}")
    val = str(shards / "synthetic-val.manifest.json")
    _refused(main(["eval", str(student), "--shards", val, "--out", str(point / "e.json")]),
             capsys, "eval", f"cannot replace {point / 'e.json'}")
    assert [p.read_text() for p in sorted(point.glob("*.*"))] == ["old", "old"]
