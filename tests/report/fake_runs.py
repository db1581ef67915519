"""Fake finished stages for the report's tests: result.json, metrics.jsonl and config.yaml written by hand in the
stage-output layout (ARCHITECTURE.md "Stage outputs"), so every number the report prints is known here."""
import json

K = 4  # classes of the fake dataset
GT_FRACTION = [0.64, 0.12, 0.12, 0.12]  # background-heavy: all-background mIoU = 0.64 / 4 = 16 %


def _metrics(miou, *, collapsed=False):
    """An evaluation dict with the keys lakd.evaluation.metrics writes. `collapsed`: predicts class 0 on 99%."""
    pred = [0.99, 0.01 / 3, 0.01 / 3, 0.01 / 3] if collapsed else [0.6, 0.14, 0.13, 0.13]
    return {"miou": miou, "iou": [miou] * K, "acc": 0.9, "macc": 0.8, "present": list(range(K)),
            "gt_fraction": GT_FRACTION, "pred_fraction": pred}


def write_stage(root, run, stage, miou, *, seed=0, teacher=None, label_miou=None, width=0.125, init=None,
                dual_path=None, collapsed=False, label_collapsed=False, dataset="toyset", evals=10,
                shards_dir=None):
    """One finished stage dir `<root>/<run>/<stage>/`; returns it."""
    d = root / run / stage
    d.mkdir(parents=True)
    ev = {"image": _metrics(miou, collapsed=collapsed)}
    if label_miou is not None:
        ev["label"] = _metrics(label_miou, collapsed=label_collapsed)
    res = {"stage": stage, "run_name": run, "dataset": dataset, "seed": seed, "init": init,
           "model": {"name": "deeplabv3", "backbone": "resnet18", "num_classes": K,
                     "in_channels": 4 if label_miou is not None else 3, "width": width},
           "teacher": teacher, "steps": 100, "seconds": 12.5, "eval": ev}
    (d / "result.json").write_text(json.dumps(res))
    cfg = {"seed": seed, "train": {"iters": 100}, "data": {"dataset": dataset}}
    if shards_dir is not None:
        cfg["data"]["shards_dir"] = str(shards_dir)
    if dual_path is not None:
        cfg["teacher_loss"] = {"dual_path": dual_path}
    import yaml

    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for s in range(1, 101):
        terms = {"ce": 2.0 / (1 + s / 10), "aux_ce": 2.2 / (1 + s / 10)}
        if stage == "student" and teacher:
            terms["kd"] = 0.5 / (1 + s / 20)
        if stage == "teacher" and dual_path:
            terms["consistency"] = 0.1 / (1 + s / 30)
        lines.append(json.dumps({"step": s, "lr": 0.01, "loss": sum(terms.values()), "terms": terms,
                                 "images_per_s": 10.0, "time": s}))
    for i in range(1, evals + 1):
        step = i * 100 // evals
        lines.append(json.dumps({"step": step, "eval": {k: {"miou": v["miou"] * i / evals} for k, v in ev.items()}}))
    lines.append('{"step": 101, "loss": ')  # a partial last line (killed mid-write) is skipped
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return d


def model_init(path):
    return {"from": str(path), "scope": "model", "layout": "lakd", "widened": []}
