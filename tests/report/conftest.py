"""Fixtures of the report's tests (the fake stage writer lives in fake_runs.py)."""
import pytest
from fake_runs import model_init, write_stage


@pytest.fixture
def sweep_like(tmp_path):
    """Like the demo's sweep: a dual-path and a single-path label-assisted teacher, an image-only teacher of
    the student's size, then per seed (0, 1, 2) the baseline, its fine-tuned control, and KD and LAD students
    initialised from that seed's baseline (the official pipeline)."""
    root = tmp_path / "runs"
    lt = write_stage(root, "la-dual", "teacher", 0.30, label_miou=0.80, dual_path=True)
    write_stage(root, "la-single", "teacher", 0.40, label_miou=0.41, dual_path=False)
    it = write_stage(root, "img-teacher", "teacher", 0.45)
    base = [0.40, 0.42, 0.41]
    ft = [0.41, 0.43, 0.42]
    lad = [0.46, 0.47, 0.49]
    kd = [0.41, 0.44, 0.42]
    for s in range(3):
        b = write_stage(root, f"base-s{s}", "baseline", base[s], seed=s)
        write_stage(root, f"ft-s{s}", "baseline", ft[s], seed=s, init=model_init(b / "baseline.safetensors"))
        write_stage(root, f"kd-s{s}", "student", kd[s], seed=s, init=model_init(b / "baseline.safetensors"),
                    teacher={"export": str(it / "teacher.safetensors"), "label_channels": 0})
        write_stage(root, f"lad-s{s}", "student", lad[s], seed=s, init=model_init(b / "baseline.safetensors"),
                    teacher={"export": str(lt / "teacher.safetensors"), "label_channels": 1})
    return root, {"baseline": base, "finetune": ft, "lad": lad, "kd": kd}
