"""`lakd report RUNS_OR_SWEEP_DIR [--out DIR]`: the report for any runs; bad input is one line, exit 2, nothing
written."""
import json

import pytest
from fake_runs import write_stage

from lakd.cli import main


def test_report_command_writes_the_report(sweep_like, tmp_path, capsys):
    root, _ = sweep_like
    out = tmp_path / "rep"
    assert main(["report", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "15 finished stage(s)" in printed and str(out / "report.md") in printed
    for name in ("report.md", "results.csv", "summary.json", "figures/roles.png", "figures/loss_curves.png",
                 "figures/miou_curves.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text()
    assert "LAD beats the fine-tuned baseline (control)" in text
    assert "No example grid: no stage's config.yaml names a validation manifest" in text
    assert not (out / "figures/examples.png").exists()


def test_report_command_default_out_and_sweep_plan_roles(tmp_path, capsys):
    """A sweep folder: roles come from its plan (here one the contract alone could not give: a KD teacher
    trained as a `baseline` stage)."""
    root = tmp_path / "sweep"
    t = write_stage(root, "wide", "baseline", 0.55, width=0.25)
    b = write_stage(root, "base-s0", "baseline", 0.40)
    k = write_stage(root, "kd-s0", "student", 0.43, teacher={"export": "/moved/baseline.safetensors",
                                                             "label_channels": 0})
    jobs = [{"kind": "shards", "run_dir": str(root / "shards")}]
    jobs += [{"kind": "stage", "run_dir": str(d), "roles": roles, "seed": 0}
             for d, roles in ((t, ["teacher_image"]), (b, ["baseline"]), (k, ["kd"]))]
    (root / ".sweep").mkdir()
    (root / ".sweep/plan.json").write_text(json.dumps({"sweep": "mine", "jobs": jobs}))
    assert main(["report", str(root), "--examples", "0"]) == 0
    text = (root / "report/report.md").read_text()
    assert "sweep `mine` (roles from its plan)" in text
    assert "| Teacher, image only | deeplabv3-resnet18-w0.25 | – | 55.0 | – |" in text
    assert "needs >= 2 seeds" in text


def _bad(args, tmp_path, capsys):
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written
    return err[0]


def test_report_command_bad_input(tmp_path, capsys):
    assert "no such folder" in _bad([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], tmp_path, capsys)
    (tmp_path / "empty" / "run").mkdir(parents=True)
    line = _bad([str(tmp_path / "empty"), "--out", str(tmp_path / "o")], tmp_path, capsys)
    assert "no finished stage" in line and str(tmp_path / "empty") in line
    d = write_stage(tmp_path / "broken", "r", "baseline", 0.4)
    (d / "result.json").write_text("{not json")
    line = _bad([str(tmp_path / "broken"), "--out", str(tmp_path / "o")], tmp_path, capsys)
    assert "result.json: not valid JSON" in line
    (tmp_path / "afile").write_text("x")
    write_stage(tmp_path / "ok", "r", "baseline", 0.4)
    assert "not a folder" in _bad([str(tmp_path / "ok"), "--out", str(tmp_path / "afile")], tmp_path, capsys)
    assert "--examples must be >= 0" in _bad([str(tmp_path / "ok"), "--examples", "-1"], tmp_path, capsys)


def test_report_command_listed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "RUNS_OR_SWEEP_DIR" in text and "--out" in text and "(default: 4)" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "report" in capsys.readouterr().out


def test_report_command_example_grid_from_real_exports(tmp_path, capsys):
    """Untrained but real exports and shards: the grid predicts with every model, and the grey label map is
    the fixed class code the label-assisted teacher is fed (lakd.method.label_noise: scale x (code + noise))."""
    import torch
    import yaml

    from lakd.data.build import build_shards
    from lakd.method.label_noise import LabelNoiser, fixed_codes
    from lakd.models import build_model
    from lakd.models.export import save_export
    from lakd.report import find_results
    from lakd.report.examples import predict_examples

    shards = tmp_path / "shards"
    manifest = build_shards("synthetic", "val", shards, num_samples=4, image_size=32, seed=0, samples_per_shard=4,
                            workers=1, progress=False)
    root = tmp_path / "runs"
    noise = {"code_dim": 1, "sigma": 0.03, "fixed_sigma": 0.02, "scale": 3.0}
    stages = {"la": ("teacher", 1, 0.5), "img": ("teacher", 0, None), "base-s0": ("baseline", 0, None),
              "lad-s0": ("student", 0, None)}
    for run, (stage, label_channels, label_miou) in stages.items():
        teacher = ({"export": str(root / "la/teacher/teacher.safetensors"), "label_channels": 1}
                   if run.startswith("lad") else None)
        d = write_stage(root, run, stage, 0.3, label_miou=label_miou, dataset="synthetic", teacher=teacher)
        (d / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "synthetic", "shards_dir": str(shards)},
                                                       "noise": noise}))
        torch.manual_seed(len(run))
        model = build_model("fcn", "resnet18", 8, in_channels=3 + label_channels, width=0.125)
        save_export(model, d / stage, {"dataset": "synthetic", **({"noise": noise} if label_channels else {})})

    ex = predict_examples(find_results(root), manifest, num_examples=2)
    assert ex["columns"] == ["LA teacher, with label", "Teacher, image only", "Baseline", "LAD"]
    codes = fixed_codes(LabelNoiser(8).slots)[:, 0].numpy()
    assert ex["label_input_range"] == pytest.approx((3.0 * -1.1, 3.0 * 1.0))
    for e in ex["examples"]:
        label = e["label"]
        valid = label != 255
        seen = e["label_input"] / noise["scale"] - codes[label.clip(0, 7)]
        assert abs(seen[valid]).max() < 6 * noise["fixed_sigma"] and abs(seen[valid]).std() > 0
        assert set(e["preds"]) == set(ex["columns"]) and all(p.shape == label.shape for p in e["preds"].values())

    assert main(["report", str(root), "--out", str(tmp_path / "rep"), "--examples", "2"]) == 0
    grid = tmp_path / "rep/figures/examples.png"
    assert grid.stat().st_size > 5000
    assert "fixed class code (the grey map" in (tmp_path / "rep/report.md").read_text()


@pytest.fixture
def _no_card_left_behind():
    from lakd.data.cards import use_card

    use_card(None)
    yield
    use_card(None)


@pytest.mark.parametrize("card_found", [True, False])
def test_folder_runs_are_reported_with_the_card_of_their_shards(tmp_path, capsys, _no_card_left_behind,
                                                                card_found):
    """A user's dataset: the report names classes as the card the validation shards were built with does (the
    manifest records it); a card that cannot be read is a note, and the classes are numbered."""
    from tests.data.folder_shards import CLASS_NAMES, build_folder_val_shards

    manifest, card = build_folder_val_shards(tmp_path)
    if not card_found:
        card.rename(tmp_path / "moved.yaml")
    root = tmp_path / "runs"
    write_stage(root, "base", "baseline", 0.4, dataset="folder", shards_dir=manifest.parent)
    write_stage(root, "wide", "baseline", 0.5, dataset="folder", shards_dir=manifest.parent, width=0.25)
    capsys.readouterr()
    assert main(["report", str(root), "--examples", "0"]) == 0
    text = (root / "report/report.md").read_text()
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    if card_found:
        assert set(CLASS_NAMES) <= rows and "Class names:" not in text
    else:
        assert {"class 0", "class 3"} <= rows and not set(CLASS_NAMES) & rows
        assert f"Class names: dataset card {card}: file not found; classes are shown by number." in text
