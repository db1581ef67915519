"""benchmarks/bench_data.py: the latency server adds its delay and counts requests; a tiny run of the
page-cached and the remote-storage sections gives every figure the README quotes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("lakd_bench_data", ROOT / "benchmarks" / "bench_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_latency_server_delays_and_counts(tmp_path):
    bench = _load()
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    server = bench.LatencyServer(tmp_path, 60)
    try:
        t0 = time.perf_counter()
        for _ in range(3):
            with urllib.request.urlopen(f"{server.url}/a.bin") as r:
                assert r.read() == b"x" * 1000
        assert time.perf_counter() - t0 >= 3 * 0.06
        assert server.requests() == 3  # the stats request itself is not counted
    finally:
        server.close()


def test_url_manifests(tmp_path):
    bench = _load()
    m = tmp_path / "bench-train.manifest.json"
    m.write_text(json.dumps({"shards": ["bench-train-000000.tar"], "total": 1}))
    url = json.loads(bench.url_manifest(m, "http://127.0.0.1:1", pipe=False).read_text())
    pipe = json.loads(bench.url_manifest(m, "http://127.0.0.1:1", pipe=True).read_text())
    assert url["shards"] == ["http://127.0.0.1:1/shards/bench-train-000000.tar"]
    assert pipe["shards"] == ["pipe:curl -s http://127.0.0.1:1/shards/bench-train-000000.tar"]


@pytest.mark.slow
def test_tiny_run_of_both_sections(tmp_path):
    out = tmp_path / "d.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_data.py"), "--num-images", "8",
                           "--height", "64", "--width", "96", "--crop", "32", "--batch-size", "2", "--samples", "8",
                           "--samples-per-shard", "4", "--repeats", "1", "--latencies-ms", "0,3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    d = json.loads(out.read_text())
    cpu = d["cpu"]
    assert min(cpu["shards"], cpu["folder"], cpu["folder_lakd_transform"]) > 0
    assert cpu["ratio"] == pytest.approx(cpu["ratio_transform"] * cpu["ratio_same_transform"], rel=0.01)
    cold = d["cold"]  # every side started from files evicted from the page cache
    assert min(cold["shards"], cold["folder_lakd_transform"]) > 0 and cold["timed_samples"] == 6
    assert cold["ratio_same_transform"] == pytest.approx(cold["shards"] / cold["folder_lakd_transform"], rel=0.01)
    assert set(d["http"]) == {"0", "3"}
    for r in d["http"].values():
        assert min(r["folder_http"], r["shards_http"], r["shards_pipe"]) > 0
        assert r["requests_per_sample"]["folder_http"] == 2.0  # one GET per image and per label
        assert 0 < r["requests_per_sample"]["shards_http"] <= 0.5  # one per shard of 4 (+ read-ahead)


def test_evict_page_cache_visits_every_file(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_data

    (tmp_path / "a").mkdir()
    for name in ("a/x.tar", "y.jpg", "z.png"):
        (tmp_path / name).write_bytes(b"0" * 8192)
    assert bench_data.evict_page_cache(tmp_path) == 3
    assert (tmp_path / "a" / "x.tar").read_bytes() == b"0" * 8192  # contents untouched
