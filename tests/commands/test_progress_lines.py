"""Progress of `lakd shards verify` and `lakd eval` when stderr is not a terminal (Slurm logs, CI)."""
from lakd.cli import main
from lakd.data.build import build_shards


def test_shards_verify_reports_progress(tmp_path, capsys):
    manifest = build_shards("synthetic", "val", tmp_path, num_samples=6, image_size=16, seed=0,
                            samples_per_shard=2, workers=1, progress=False)
    assert main(["shards", "verify", str(manifest)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "ok" and "lakd shards verify: 3/3 shards (100%)" in captured.err
    assert main(["shards", "verify", str(manifest), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
