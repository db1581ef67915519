"""`model.pretrained` in a stage: catalogue names resolved in the weights folder, implied options applied or a
conflict refused, a file that does not fit refused in one line before anything is written (exit 2), and the
load report (tensors loaded, first conv widened 3 -> 3 + k, classifier dropped, heads initialised)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lakd.cli import main
from lakd.config import ModelConfig, load_config
from lakd.models import build_model, catalogue
from lakd.models.catalogue import Entry
from lakd.models.pretrained import PretrainedError, build_with_pretrained, check_pretrained

SMALL = 0.125


def _backbone_file(path, *, deep_stem: bool, fc: int = 256):
    """An ImageNet-style backbone file (bare keys + an fc classifier) of a width-0.125 ResNet-18."""
    src = build_model("deeplabv3", "resnet18", 5, width=SMALL, deep_stem=deep_stem)
    sd = {k[len("backbone."):]: v.clone() for k, v in src.state_dict().items() if k.startswith("backbone.")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 64), torch.randn(1000)
    torch.save(sd, path)
    return sd


def _cfg(**kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig(width=SMALL), **kw)


def test_backbone_file_report_for_a_label_teacher(tmp_path):
    path = tmp_path / "r18.pth"
    sd = _backbone_file(path, deep_stem=True)
    report = check_pretrained(_cfg(pretrained=str(path)), num_classes=5, in_channels=4)
    assert report.ok and report.scope == "backbone" and sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert report.widened == ["backbone.conv1.weight [16, 3, 3, 3] -> [16, 4, 3, 3]"]
    assert set(report.fresh) == {"decode_head", "aux_head"}
    text = report.describe()
    assert "widened 3 -> 3 + 1 input channels" in text and "dropped from the file (2): fc.weight, fc.bias" in text
    assert "initialised here, not in the file: decode_head" in text
    model, report2 = build_with_pretrained(_cfg(pretrained=str(path)), num_classes=5, in_channels=4)
    assert report2.loaded == report.loaded
    assert torch.equal(model.backbone.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    assert torch.equal(model.backbone.conv1.weight[:, :3], sd["conv1.weight"])


def test_file_that_does_not_fit_is_one_line(tmp_path):
    path = tmp_path / "tv.pth"
    _backbone_file(path, deep_stem=False)  # a torchvision-style 7x7 stem into the deep-stem model
    with pytest.raises(PretrainedError) as err:
        check_pretrained(_cfg(pretrained=str(path)), num_classes=5, in_channels=3)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "backbone.conv1.weight is [16, 3, 7, 7] in the file" in msg
    assert "set model.options.deep_stem=false" in msg
    with pytest.raises(PretrainedError, match="not a .*|cannot be read"):
        junk = tmp_path / "junk.pth"
        junk.write_bytes(b"not weights")
        check_pretrained(_cfg(pretrained=str(junk)), num_classes=5)
    with pytest.raises(PretrainedError, match="file not found"):
        check_pretrained(_cfg(pretrained=str(tmp_path / "none.pth")), num_classes=5)


@pytest.fixture
def tiny_catalogue(monkeypatch, tmp_path):
    entries = {
        "tiny-tv": Entry(name="tiny-tv", backbone="resnet18", layout="torchvision", url="http://127.0.0.1/x",
                         file="tiny-tv.pth", options={"deep_stem": False}),
    }
    monkeypatch.setattr(catalogue, "load_catalogue", lambda path=None: entries)
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("LAKD_WEIGHTS_DIR", str(folder))
    return folder


def test_catalogue_name_applies_implied_options(tiny_catalogue, tmp_path):
    cfg = _cfg(pretrained="tiny-tv")
    with pytest.raises(PretrainedError, match=r"lakd weights fetch tiny-tv --to .*weights"):
        check_pretrained(cfg, num_classes=5)
    _backbone_file(tiny_catalogue / "tiny-tv.pth", deep_stem=False)
    report = check_pretrained(cfg, num_classes=5)
    assert report.ok and report.source == "tiny-tv" and "catalogue tiny-tv" in report.describe()
    model, _ = build_with_pretrained(cfg, num_classes=5)
    assert model.config["deep_stem"] is False and model.backbone.conv1.weight.shape[-1] == 7
    with pytest.raises(PretrainedError, match="need deep_stem: False .* model.options sets deep_stem: True"):
        check_pretrained(_cfg(pretrained="tiny-tv", options={"deep_stem": True}), num_classes=5)
    with pytest.raises(PretrainedError, match="holds resnet18 weights, but model.backbone is resnet50"):
        check_pretrained(_cfg(pretrained="tiny-tv", backbone="resnet50"), num_classes=5)
    with pytest.raises(PretrainedError, match="no weights named 'tiny-tw' .*did you mean tiny-tv"):
        check_pretrained(_cfg(pretrained="tiny-tw"), num_classes=5)
    # run.weights_dir wins over the environment variable
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(PretrainedError, match="are not in .*other"):
        check_pretrained(cfg, num_classes=5, weights_dir=str(other))


def test_config_keeps_catalogue_names_and_makes_paths_absolute(tmp_path):
    cfg = load_config("synthetic", ["model.pretrained=resnet18-deepstem-cirkd", "run.weights_dir=w"], cwd=tmp_path)
    assert cfg.model.pretrained == "resnet18-deepstem-cirkd" and cfg.teacher.model.pretrained == cfg.model.pretrained
    assert cfg.run.weights_dir == str(tmp_path / "w")
    cfg = load_config("synthetic", ["model.pretrained=w/r18.pth"], cwd=tmp_path)
    assert cfg.model.pretrained == str(tmp_path / "w" / "r18.pth")
    # the weights folder is a machine path: it does not change the experiment's hash
    a = load_config("synthetic", ["model.pretrained=resnet18-deepstem-cirkd", "run.weights_dir=/a"])
    b = load_config("synthetic", ["model.pretrained=resnet18-deepstem-cirkd", "run.weights_dir=/b"])
    assert a.hash() == b.hash()


def test_train_refuses_a_misfit_before_writing(tmp_path, capsys):
    path = tmp_path / "tv.pth"
    _backbone_file(path, deep_stem=False)
    runs = tmp_path / "runs"
    code = main(["train", "--stage", "teacher", "--config", "synthetic", f"run.runs_dir={runs}",
                 f"model.pretrained={path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "teacher.model.pretrained" in err and str(path) in err and "backbone.conv1.weight" in err
    assert not runs.exists()


def test_teacher_initialised_from_a_baseline_export(tmp_path, monkeypatch, capsys):
    """The official pipeline's initialisation: a trained image-only baseline export (whole model, lakd layout)
    loaded into the label-assisted teacher, its first conv widened 3 -> 3 + 1; the load report is printed."""
    from lakd.data import build_shards
    from lakd.engine.stage import run_stage

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "SLURM_PROCID", "SLURM_STEP_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    shards = tmp_path / "shards"
    build_shards("synthetic", "train", shards, samples_per_shard=8, workers=1, progress=False, num_samples=16,
                 image_size=32, seed=0)
    build_shards("synthetic", "val", shards, samples_per_shard=4, workers=1, progress=False, num_samples=4,
                 image_size=32, seed=0)
    common = [f"data.shards_dir={shards}", f"run.runs_dir={tmp_path / 'runs'}", "train.iters=2",
              "train.batch_size=2", "data.crop_size=[32,32]", "eval.every=0", "checkpoint.every=2",
              "log.progress=plain"]
    run_stage(load_config("synthetic", common + ["run.name=base"], stage="baseline"))
    export = tmp_path / "runs" / "base" / "baseline" / "baseline.safetensors"
    capsys.readouterr()
    result = run_stage(load_config("synthetic", common + ["run.name=la", f"model.pretrained={export}"],
                                   stage="teacher"))
    out = capsys.readouterr()
    text = out.out + out.err
    assert result["steps"] == 2
    assert result["init"]["from"] == str(export) and result["init"]["scope"] == "model" and result["init"]["widened"]
    assert f"initialised from {export}" in text and f"pretrained: {export}" in text
    assert "lakd layout, model weights" in text and "widened 3 -> 3 + 1 input channels" in text


PAPER_PRESETS = ["cityscapes", "ade20k", "voc", "coco_stuff10k", "coco_stuff164k", "camvid"]


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_are_faithful_and_run_without_the_weights(preset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAKD_WEIGHTS_DIR", str(tmp_path / "weights"))
    cfg = load_config(preset)
    assert cfg.model.pretrained == "resnet18-deepstem-cirkd" and cfg.teacher.model.pretrained == cfg.model.pretrained
    assert cfg.model.options == {"dropout": 0.01, "aspp_dropout": 0.01}  # LAD's DeepLabV3 heads
    assert abs(cfg.noise.scale * 57.63 - 100) < 0.05  # the official label/image std ratio (docs/method.md, Paper presets)
    # without the file: one line naming the fetch command, nothing written
    runs = tmp_path / "runs"
    assert main(["train", "--stage", "teacher", "--config", preset, f"run.runs_dir={runs}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lakd weights fetch resnet18-deepstem-cirkd" in err
    assert "model.pretrained=null" in err and not runs.exists()
    # model.pretrained=null: the check passes the weights and stops at the missing shards
    assert main(["train", "--stage", "teacher", "--config", preset, f"run.runs_dir={runs}",
                 "model.pretrained=null", f"data.shards_dir={tmp_path / 'none'}"]) == 2
    assert "shards not found" in capsys.readouterr().err
    # with a deep-stem ResNet-18 ImageNet file in the weights folder the preset's model takes it
    (tmp_path / "weights").mkdir()
    full = build_model("deeplabv3", "resnet18", 5, deep_stem=True)
    sd = {k[len("backbone."):]: v for k, v in full.state_dict().items() if k.startswith("backbone.")}
    torch.save(sd, tmp_path / "weights" / "resnet18-imagenet.pth")
    from lakd.data import get_card

    report = check_pretrained(cfg.teacher.model, num_classes=get_card(preset).num_classes,
                              in_channels=3 + cfg.noise.code_dim)
    assert report.ok and report.widened and report.source == "resnet18-deepstem-cirkd"


def test_every_paper_sweep_stage_builds_with_its_backbone_weights():
    """Each model of the paper sweep names catalogue weights of its own backbone, and its options (the presets'
    DeepLabV3 dropouts, or null = the model default) build (on the meta device: nothing allocated)."""
    from lakd.config import build_config
    from lakd.data import get_card
    from lakd.models.catalogue import apply_options, get_entry
    from lakd.models.pretrained import _build
    from lakd.sweep import make_plan

    seen = set()
    for job in make_plan("paper", runs_dir="/tmp/lakd-plan-test").ordered():
        if job.kind != "stage":
            continue
        cfg = build_config(job.config)
        m = cfg.stage_model
        if not m.pretrained or m.pretrained.endswith(".safetensors"):
            continue  # initialised from another stage's export (checked when that stage runs)
        entry = get_entry(m.pretrained)
        assert entry.backbone == m.backbone, job.key
        key = (m.name, m.backbone, str(m.options), cfg.stage)
        if key in seen:
            continue
        seen.add(key)
        with torch.device("meta"):
            _build(m, get_card(cfg.data.dataset).num_classes, 3 + (cfg.noise.code_dim if cfg.stage == "teacher"
                                                                    else 0), apply_options(m.options, entry), "model")
    assert {k[0] for k in seen} == {"fcn", "pspnet", "deeplabv3", "stdc", "ocrnet"}


def _mmseg_resnet_v1c_shapes(depth: int) -> dict[str, tuple]:
    """Key -> shape of mmseg's ResNetV1c ImageNet file (`resnet{18,50}_v1c-*.pth`), written from mmseg's
    architecture: a 32-32-64 deep stem (`stem.N`), layer1 starting at 64 channels, an ImageNet fc."""
    shapes: dict[str, tuple] = {}

    def bn(name, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{s}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["stem.0.weight"], shapes["stem.3.weight"], shapes["stem.6.weight"] = (32, 3, 3, 3), (32, 32, 3, 3), \
        (64, 32, 3, 3)
    bn("stem.1", 32), bn("stem.4", 32), bn("stem.7", 64)
    bottleneck = depth == 50
    blocks, exp = ([3, 4, 6, 3], 4) if bottleneck else ([2, 2, 2, 2], 1)
    inplanes = 64
    for li, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        for b in range(n):
            p = f"layer{li}.{b}."
            if bottleneck:
                shapes[p + "conv1.weight"] = (planes, inplanes, 1, 1)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3)
                shapes[p + "conv3.weight"] = (planes * exp, planes, 1, 1)
                bn(p + "bn1", planes), bn(p + "bn2", planes), bn(p + "bn3", planes * exp)
            else:
                shapes[p + "conv1.weight"] = (planes, inplanes, 3, 3)
                shapes[p + "conv2.weight"] = (planes, planes, 3, 3)
                bn(p + "bn1", planes), bn(p + "bn2", planes)
            if b == 0 and (li == 2 or inplanes != planes * exp):
                shapes[p + "downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
                bn(p + "downsample.1", planes * exp)
            inplanes = planes * exp
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512 * exp), (1000,)
    return shapes


def _tiny_file(shapes: dict, path):
    """A full-size weight file that takes no space: every tensor a stride-0 view of one element."""
    one = torch.zeros(1)
    torch.save({k: one.expand(s) if s else torch.tensor(0) for k, s in shapes.items()}, path)


@pytest.mark.parametrize("depth", [18, 50])
def test_real_mmseg_v1c_files_need_the_32_wide_stem(tmp_path, depth):
    """mmseg's ResNetV1c stem is 32-32-64 (CIRKD's 64-64-128): the catalogue's mmseg entries imply stem_width 32."""
    path = tmp_path / "v1c.pth"
    _tiny_file(_mmseg_resnet_v1c_shapes(depth), path)
    entry = catalogue.load_catalogue()[f"resnet{depth}-v1c-mmseg"]
    cfg = _cfg(backbone=f"resnet{depth}", width=1.0, pretrained=str(path))
    with pytest.raises(PretrainedError, match=r"backbone.conv1.weight is \[32, 3, 3, 3\] in the file"):
        check_pretrained(cfg, num_classes=21, in_channels=4)
    report = check_pretrained(dataclasses.replace(cfg, options=dict(entry.options)), num_classes=21, in_channels=4)
    assert report.ok and report.layout == "mmseg" and report.widened and sorted(report.ignored) == ["fc.bias",
                                                                                                   "fc.weight"]


def test_real_cirkd_resnet18_file_fits_the_default_stem(tmp_path):
    from tests.models.test_weights import cirkd_shapes

    shapes = {k[len("pretrained."):]: s for k, s in cirkd_shapes("deeplabv3", 18, 3, 21).items()
              if k.startswith("pretrained.")}
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    _tiny_file(shapes, tmp_path / "resnet18-imagenet.pth")
    entry = catalogue.load_catalogue()["resnet18-deepstem-cirkd"]
    cfg = _cfg(width=1.0, pretrained=str(tmp_path / "resnet18-imagenet.pth"), options=dict(entry.options))
    assert check_pretrained(cfg, num_classes=21, in_channels=4).ok


def test_an_export_says_what_it_is(tmp_path):
    """init_from hands a stage another stage's export: the options it was built with are reused (a baseline
    built from torchvision weights keeps its 7x7 stem), and a different model is refused in one line."""
    from lakd.models.export import save_export

    base = build_model("deeplabv3", "resnet18", 5, width=SMALL, deep_stem=False, dropout=0.01)
    st, _ = save_export(base, tmp_path / "baseline", {"dataset": "synthetic"})
    model, report = build_with_pretrained(_cfg(pretrained=str(st)), num_classes=5, in_channels=4)
    assert model.config["deep_stem"] is False and model.config["dropout"] == 0.01
    assert report.ok and report.scope == "model" and report.widened
    assert torch.equal(model.decode_head.classifier.weight, base.decode_head.classifier.weight)
    # model.options still wins where it is set (dropout does not change the weights' shapes)
    model, _ = build_with_pretrained(_cfg(pretrained=str(st), options={"dropout": 0.1}), num_classes=5)
    assert model.config["dropout"] == 0.1
    with pytest.raises(PretrainedError, match=r"is a deeplabv3-resnet18 width 0.125 export, the model is "
                                              r"pspnet-resnet18 width 0.125"):
        check_pretrained(_cfg(name="pspnet", pretrained=str(st)), num_classes=5)
