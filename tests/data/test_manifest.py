"""Manifests are data: validated field by field, `pipe:`/URL entries opened only when the user allows it,
`lakd shards verify` says ok only for shards it read."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from lakd.cli import main
from lakd.data import build_eval_loader, build_shards, build_train_loader, load_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return build_shards("synthetic", "val", out, num_samples=6, image_size=32, seed=0, samples_per_shard=4,
                        workers=1, progress=False)


def _write(tmp_path, doc) -> str:
    path = tmp_path / "bad.manifest.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def _one_line_exit_2(capsys, argv, expect: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert expect in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("change, expect", [
    (lambda d: {"format": d["format"], "dataset": "synthetic"}, "missing field(s) split, shards"),
    (lambda d: {**d, "samples_per_shard": ["4", "2"]}, "'samples_per_shard' must be a list of integers"),
    (lambda d: {**d, "total": "lots"}, "'total' must be an integer"),
    (lambda d: {**d, "shards": [], "samples_per_shard": [], "total": 0}, "lists no samples"),
    (lambda d: {**d, "num_classes": 1}, "'num_classes' must be an integer >= 2"),
])
def test_bad_manifests_are_one_line_exit_2(tmp_path, capsys, manifest, change, expect):
    bad = _write(tmp_path, change(json.loads(manifest.read_text())))
    for command in (["shards", "info"], ["shards", "verify"]):
        _one_line_exit_2(capsys, [*command, bad], expect)
    with pytest.raises(ValueError, match="manifest"):
        load_manifest(bad)


def test_truncated_manifest(tmp_path, capsys, manifest):
    bad = _write(tmp_path, manifest.read_text()[:50])
    _one_line_exit_2(capsys, ["shards", "info", bad], "not a JSON manifest")


def test_pipe_entries_run_only_when_allowed(tmp_path, capsys, manifest):
    doc = json.loads(manifest.read_text())
    marker = tmp_path / "ran"
    real = manifest.parent / doc["shards"][0]
    doc["shards"][0] = f"pipe:touch {marker}; cat {real}"
    bad = _write(tmp_path, doc)
    for build in (lambda **kw: next(iter(build_eval_loader(bad, **kw))),
                  lambda **kw: next(build_train_loader(bad, batch_size=1, crop_size=16, seed=0, **kw))):
        with pytest.raises(ValueError, match="is a command or URL, not a file.*data.allow_pipe=true"):
            build()
        assert not marker.exists()
    # the user allows it: the command runs
    assert "image" in next(iter(build_eval_loader(bad, allow_pipe=True)))
    assert marker.exists()
    # verify does not open it, and does not call the set ok
    code = main(["shards", "verify", bad])
    out = capsys.readouterr().out
    assert code == 1 and "not checked" in out and "\nok" not in out
    # `info` describes the manifest without running anything
    marker.unlink()
    assert main(["shards", "info", bad]) == 0 and not marker.exists()


def test_verify_counts_samples_not_only_checksums(tmp_path, capsys, manifest):
    doc = json.loads(manifest.read_text())
    empty = io.BytesIO()
    tarfile.open(fileobj=empty, mode="w").close()
    for name in doc["shards"]:
        (tmp_path / name).write_bytes(empty.getvalue())
        doc["sha256"][name] = hashlib.sha256(empty.getvalue()).hexdigest()
    bad = _write(tmp_path, doc)
    assert main(["shards", "verify", bad]) == 1
    assert "holds 0 samples, the manifest says 4" in capsys.readouterr().out
    assert main(["shards", "verify", str(manifest)]) == 0
    assert capsys.readouterr().out.strip() == "ok"


def test_shards_build_option_checks(tmp_path, capsys):
    _one_line_exit_2(capsys, ["shards", "build", "synthetic", "--samples-per-shard", "0", "--out",
                              str(tmp_path / "o")], "--samples-per-shard must be >= 1")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_exit_2(capsys, ["shards", "build", "synthetic", "--out", str(afile / "sub")], "is not a folder")
    assert not (tmp_path / "o").exists()
