"""Fixtures of the Slurm tests: the test cluster (slurm/testcluster, started by tests/run.sh), tiny synthetic
shards, and a job helper (slurmtest.Slurm).

Without a running test cluster the tests that need it skip with the reason (in CI, CI=true, they fail).
Tests that use none of these fixtures run anywhere.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from slurmtest import SAMPLES_PER_SHARD, TEST_SHARDS, Slurm, cluster_problem, stage_args


def pytest_collection_modifyitems(config, items):
    """Tests that need the cluster are marked `slurm` (`multinode` for two nodes): `-m "not slurm"` skips them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "slurm_cluster" in names or "slurm" in names or "two_nodes" in names:
            item.add_marker(pytest.mark.slurm)
        if "two_nodes" in names:
            item.add_marker(pytest.mark.multinode)


@pytest.fixture(scope="session")
def slurm_cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Slurm test cluster is required in CI: {problem}")
        pytest.skip(f"no Slurm test cluster: {problem}")
    nodes = subprocess.run(["sinfo", "-h", "-N", "-p", "gpu", "-o", "%N"], capture_output=True, text=True).stdout.split()
    return {"nodes": sorted(set(nodes))}


@pytest.fixture(scope="session")
def two_nodes(slurm_cluster):
    if len(slurm_cluster["nodes"]) < 2:
        pytest.fail(f"the test cluster has {len(slurm_cluster['nodes'])} node(s); the multi-node tests need 2")
    return slurm_cluster["nodes"][:2]


@pytest.fixture(scope="session")
def shards_dir(tmp_path_factory) -> Path:
    """Tiny synthetic shards, built once per session (the nodes share this machine's /tmp)."""
    from lakd.data import build_shards

    out = tmp_path_factory.mktemp("slurm-shards")
    for split, opts in TEST_SHARDS.items():
        build_shards("synthetic", split, out, samples_per_shard=SAMPLES_PER_SHARD, workers=1, progress=False, **opts)
    return out


@pytest.fixture
def slurm(slurm_cluster, tmp_path) -> Slurm:
    return Slurm(tmp_path)


@pytest.fixture(scope="session")
def reference_teacher(slurm_cluster, shards_dir, tmp_path_factory) -> dict:
    """`sbatch slurm/teacher.sh` on one node with 2 tasks, uninterrupted: the run the others must equal."""
    s = Slurm(tmp_path_factory.mktemp("reference"))
    runs = s.workdir / "runs"
    job = s.sbatch("slurm/teacher.sh", ["-N1", "--ntasks-per-node=2", "--gpus-per-node=2", "--cpus-per-task=1",
                                        "--time=15", f"--output={s.workdir}/teacher-%j.out"],
                   ["--config", "synthetic", *stage_args(shards_dir, runs, "reference")])
    s.wait_gone(job, 600, "(reference teacher)")
    stage_dir = runs / "reference" / "teacher"
    log = (s.workdir / f"teacher-{job}.out").read_text()
    return {"job": job, "stage_dir": stage_dir, "export": stage_dir / "teacher.safetensors", "log": log,
            "slurm": s}
