#!/usr/bin/env python
"""Data-throughput benchmark: the lakd shard pipeline vs a folder of file pairs read like the reference code.

Both sides decode the same JPEG images and uint8 PNG labels and produce the same training crops (random scale
0.5-2.0, pad, crop, flip, normalise) on one CPU core (one process, one thread), in one run on one machine:

- `shards`: `lakd.data.build_train_loader` over WebDataset tar shards (sequential tar reads; only the crop
  window is resized);
- `folder`: a torch `Dataset` over `images/<i>.jpg` + `labels/<i>.png`, one file pair per sample, doing what
  the reference code's `__getitem__` does (decode, resize the whole image and label, float mean/std, pad,
  crop, flip), through a `DataLoader` with `num_workers=0`. PIL is used on both sides (OpenCV is not a lakd
  dependency);
- `folder_lakd_transform` (for insight only): the same folder with lakd's transform, which shows how much
  of the gain comes from the tar stream and how much from resizing only the crop window.

Both data sets are written fresh and are in the page cache: section `cpu` measures CPU cost per sample, not
storage. Section `http` measures what shards are for: the same two data sets served by a local HTTP server
(127.0.0.1, its own process) that adds a fixed latency to every request, as each open or GET costs on a
parallel file system or an object store (--latencies-ms, default 0,1,5). Both sides use lakd's transform:

- `folder_http`: two GETs per sample (image, label), like a folder of file pairs on remote storage;
- `shards_http`: the training stream over the shard URLs (`http://...tar`, read through curl: one GET per
  shard of --samples-per-shard samples); `shards_pipe`: the same through `pipe:curl -s URL` manifest entries.

Section `loader` (used by benchmarks/gpu.py) gives the streaming loader's images/s with a worker per core.

Prints tables and a JSON line; `--json PATH` also writes it (default benchmarks/results/bench_data.json).
Usage: python benchmarks/bench_data.py [--sections cpu,http] [--num-images 48] [--height 1024 --width 2048]
       [--crop 512] [--samples 96] [--latencies-ms 0,1,5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import lakd
from lakd import IGNORE_INDEX
from lakd.data.build import _ShardWriter, atomic_write_bytes, encode_label_png
from lakd.data.manifest import FORMAT, Manifest, manifest_name
from lakd.data.pipeline import build_train_loader
from lakd.data.readers.synthetic import generate
from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling scripts, however it was loaded
from bench_step import parse_crop  # noqa: E402


def make_data(root: Path, n: int, h: int, w: int, seed: int = 0, samples_per_shard: int = 16) -> tuple[Path, Path]:
    """n synthetic scenes at h x w: a folder of file pairs and the same bytes as shards + manifest."""
    import io

    folder, shards = root / "folder", root / "shards"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir(parents=True)
    shards.mkdir()
    writer = _ShardWriter(shards, "bench", "train", samples_per_shard)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, lab = generate(i, 256, seed)
        im = Image.fromarray(img).resize((w, h), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, (h, w, 3))  # fine detail like a real photo
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        jpg = buf.getvalue()
        label = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
        png = encode_label_png(label)
        (folder / "images" / f"{i:06d}.jpg").write_bytes(jpg)
        (folder / "labels" / f"{i:06d}.png").write_bytes(png)
        writer.add(i, jpg, "jpg", png, {"key": f"{i:06d}", "index": i, "width": w, "height": h})
    writer.close_shard()
    writer.commit()  # the shards take their final names
    m = Manifest(dataset="synthetic", split="train", shards=writer.names, samples_per_shard=writer.counts,
                 total=n, num_classes=8, class_pixel_histogram=[0] * 8, sha256=writer.sha, config={},
                 lakd_version=lakd.__version__, format=FORMAT)
    mpath = shards / manifest_name("bench", "train")
    atomic_write_bytes(mpath, m.to_json().encode())
    return folder, mpath


class FolderDataset(torch.utils.data.Dataset):
    """One image file + one label file per sample, augmented the way the reference code's Dataset does."""

    def __init__(self, folder: Path, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.images = sorted((folder / "images").glob("*.jpg"))
        self.labels = [folder / "labels" / (p.stem + ".png") for p in self.images]
        self.crop = crop
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.open(self.images[i]).convert("RGB")
        label = Image.open(self.labels[i])
        f = 0.5 + random.randint(0, 15) / 10.0
        w, h = image.size
        size = (int(round(w * f)), int(round(h * f)))
        image = np.asarray(image.resize(size, Image.BILINEAR), np.float32)
        label = np.asarray(label.resize(size, Image.NEAREST), np.int64)
        image = (image - self.mean) / self.std
        ph, pw = max(self.crop - label.shape[0], 0), max(self.crop - label.shape[1], 0)
        if ph or pw:
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        y0 = random.randint(0, label.shape[0] - self.crop)
        x0 = random.randint(0, label.shape[1] - self.crop)
        image = image[y0:y0 + self.crop, x0:x0 + self.crop].transpose(2, 0, 1)
        label = label[y0:y0 + self.crop, x0:x0 + self.crop]
        if random.random() < 0.5:
            image, label = image[:, :, ::-1], label[:, ::-1]
        return torch.from_numpy(image.copy()), torch.from_numpy(label.copy())


class FolderLakdTransform(FolderDataset):
    """Same files, but lakd's crop-first transform: separates storage effects from transform effects."""

    def __init__(self, folder: Path, crop: int):
        super().__init__(folder, crop)
        from lakd.data.transforms import norm_tensors, scale_choices

        self.mean_t, self.std_t = norm_tensors(IMAGENET_MEAN, IMAGENET_STD)
        self.scales = scale_choices((0.5, 2.0))
        self.epoch = 0

    def __getitem__(self, i):
        from lakd.data.transforms import decode_image, decode_label, sample_rng, train_transform

        image = decode_image(self.images[i].read_bytes())
        label = decode_label(self.labels[i].read_bytes())
        return train_transform(image, label, sample_rng(0, self.epoch, i), crop_size=(self.crop, self.crop),
                               scales=self.scales, mean_t=self.mean_t, std_t=self.std_t)


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (curl), user + system."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure_batches(it, batch_size: int, samples: int, warmup: int = 1) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second of this process and its children). On a shared
    machine the CPU figure is the steadier one: waiting for the scheduler costs wall time, not CPU time."""
    for _ in range(warmup):
        next(it)
    n = 0
    t, c = time.perf_counter(), _cpu_seconds()
    while n < samples:
        b = next(it)
        n += (b["image"] if isinstance(b, dict) else b[0]).shape[0]
    return n / (time.perf_counter() - t), n / max(_cpu_seconds() - c, 1e-9)


def time_batches(it, batch_size: int, samples: int, warmup: int = 1) -> float:
    return measure_batches(it, batch_size, samples, warmup)[0]


def _best(runs: dict) -> tuple[dict, dict]:
    """Best (highest) wall and CPU rates per side over the repeats."""
    return {k: max(w for w, _ in v) for k, v in runs.items()}, {k: max(c for _, c in v) for k, v in runs.items()}


# ------------------------------------------------------------------------------------------- remote storage
SERVER_CODE = r"""
import functools, http.server, json, sys, threading, time
root, latency = sys.argv[1], float(sys.argv[2]) / 1000.0
count = {"requests": 0}
lock = threading.Lock()

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/__stats":
            body = json.dumps(count).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with lock:
            count["requests"] += 1
        time.sleep(latency)  # what every open / GET costs on remote storage
        super().do_GET()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class LatencyServer:
    """A local HTTP server (own process) over `root` adding `latency_ms` to every request; counts them."""

    def __init__(self, root: Path, latency_ms: float):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", SERVER_CODE, str(root), str(latency_ms)],
                                     stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def requests(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/__stats") as r:
            return int(json.loads(r.read())["requests"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def url_manifest(manifest: Path, base_url: str, pipe: bool) -> Path:
    """A copy of the manifest whose shard entries are `<base_url>/shards/<name>` (or `pipe:curl -s ...`)."""
    d = json.loads(manifest.read_text())
    d["shards"] = [(f"pipe:curl -s {base_url}/shards/{s}" if pipe else f"{base_url}/shards/{s}") for s in d["shards"]]
    out = manifest.with_name(("pipe-" if pipe else "url-") + manifest.name)
    out.write_text(json.dumps(d))
    return out


class FolderHttp(torch.utils.data.Dataset):
    """The folder of file pairs on remote storage: one GET per file, then lakd's transform (as the shards)."""

    def __init__(self, folder: Path, base_url: str, crop: int):
        from lakd.data.transforms import norm_tensors, scale_choices

        self.names = sorted(p.name for p in (folder / "images").glob("*.jpg"))
        self.base_url, self.crop = base_url, crop
        self.mean_t, self.std_t = norm_tensors(IMAGENET_MEAN, IMAGENET_STD)
        self.scales = scale_choices((0.5, 2.0))

    def __len__(self):
        return len(self.names)

    def _get(self, path: str) -> bytes:
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/{path}") as r:
            return r.read()

    def __getitem__(self, i):
        from lakd.data.transforms import decode_image, decode_label, sample_rng, train_transform

        stem = self.names[i][:-4]
        image = decode_image(self._get(f"folder/images/{stem}.jpg"))
        label = decode_label(self._get(f"folder/labels/{stem}.png"))
        return train_transform(image, label, sample_rng(0, 0, i), crop_size=(self.crop, self.crop),
                               scales=self.scales, mean_t=self.mean_t, std_t=self.std_t)


def _forever(dl):
    while True:
        yield from dl


def http_section(root: Path, folder: Path, manifest: Path, args) -> dict:
    """samples/s per core of per-file GETs vs shard streams for each added per-request latency."""
    out = {}
    for latency in args.latencies_ms:
        server = LatencyServer(root, latency)
        try:
            url_m, pipe_m = url_manifest(manifest, server.url, False), url_manifest(manifest, server.url, True)
            runs = {"folder_http": [], "shards_http": [], "shards_pipe": []}
            requests = {}
            for r in range(args.repeats):
                for side in runs:
                    before = server.requests()
                    if side == "folder_http":
                        dl = torch.utils.data.DataLoader(FolderHttp(folder, server.url, args.crop[0]),
                                                         batch_size=args.batch_size, shuffle=True, num_workers=0,
                                                         drop_last=True)
                        sps = measure_batches(_forever(dl), args.batch_size, args.samples, warmup=0)
                    else:
                        stream = build_train_loader(url_m if side == "shards_http" else pipe_m,
                                                    batch_size=args.batch_size, crop_size=args.crop, seed=r,
                                                    num_workers=0, allow_pipe=True)  # our own manifests
                        sps = measure_batches(stream, args.batch_size, args.samples, warmup=0)
                        stream.close()
                    runs[side].append(sps)
                    requests[side] = (server.requests() - before) / args.samples
        finally:
            server.close()
        best, cpu = _best(runs)
        out[f"{latency:g}"] = {**{k: round(v, 2) for k, v in best.items()},
                               "ratio_shards_http": round(best["shards_http"] / best["folder_http"], 3),
                               "ratio_shards_pipe": round(best["shards_pipe"] / best["folder_http"], 3),
                               "cpu_rate": {k: round(v, 2) for k, v in cpu.items()},
                               "cpu_ratio_shards_http": round(cpu["shards_http"] / cpu["folder_http"], 3),
                               "requests_per_sample": {k: round(v, 3) for k, v in requests.items()},
                               "runs": {k: [[round(w, 2), round(c, 2)] for w, c in v] for k, v in runs.items()}}
    return out


def emit(out: dict, json_path) -> int:
    """Print the result as one JSON line and, with --json, write it there too."""
    print(json.dumps(out))
    if json_path:
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, (json.dumps(out, indent=1) + "\n").encode())
    return 0


def loader_throughput(manifest: Path, *, workers: int, crop: tuple[int, int], batch_size: int,
                      samples: int) -> dict:
    """images/s of the streaming training loader with `workers` worker processes (one thread each): what
    lakd can feed one GPU from this machine's cores."""
    stream = build_train_loader(manifest, batch_size=batch_size, crop_size=crop, seed=0, num_workers=workers)
    try:
        sps = time_batches(stream, batch_size, samples, warmup=max(1, workers))  # every worker started
    finally:
        stream.close()
    return {"workers": workers, "images_per_s": round(sps, 2), "crop": list(crop), "batch_size": batch_size,
            "timed_samples": samples}


def main_loader(args) -> int:
    """`--sections loader`: the all-cores loader figure only (benchmarks/gpu.py runs this)."""
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="lakd-bench-") as tmp:
        t0 = time.perf_counter()
        _, manifest = make_data(Path(tmp), args.num_images, args.height, args.width)
        prep = time.perf_counter() - t0
        out = {"benchmark": "loader_all_cores", "unit": "images/s",
               **loader_throughput(manifest, workers=workers, crop=args.crop, batch_size=args.batch_size,
                                   samples=args.samples),
               "image_size": [args.height, args.width], "images": args.num_images, "cpus": os.cpu_count(),
               "data_prep_s": round(prep, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(f"streaming loader, {workers} workers, {args.height}x{args.width} JPEGs -> {args.crop[0]}x{args.crop[1]} "
          f"crops: {out['images_per_s']:.1f} images/s")
    return emit(out, args.json)


def cpu_section(folder: Path, manifest: Path, args) -> dict:
    """Page-cached, per core: shards vs the reference folder reader vs the folder with lakd's transform."""
    res = {"shards": [], "folder": [], "folder_lakd_transform": []}
    for r in range(args.repeats):
        stream = build_train_loader(manifest, batch_size=args.batch_size, crop_size=args.crop, seed=r, num_workers=0)
        res["shards"].append(measure_batches(stream, args.batch_size, args.samples))
        stream.close()
        for key, ds in (("folder", FolderDataset(folder, args.crop[0])),
                        ("folder_lakd_transform", FolderLakdTransform(folder, args.crop[0]))):
            dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=0,
                                             drop_last=True)
            res[key].append(measure_batches(_forever(dl), args.batch_size, args.samples))
    best, cpu = _best(res)
    return {**{k: round(v, 2) for k, v in best.items()},
            "ratio": round(best["shards"] / best["folder"], 3),
            "ratio_same_transform": round(best["shards"] / best["folder_lakd_transform"], 3),
            "ratio_transform": round(best["folder_lakd_transform"] / best["folder"], 3), "goal_ratio": 1.5,
            "cpu_rate": {k: round(v, 2) for k, v in cpu.items()},
            "cpu_ratio": round(cpu["shards"] / cpu["folder"], 3),
            "cpu_ratio_same_transform": round(cpu["shards"] / cpu["folder_lakd_transform"], 3),
            "runs": {k: [[round(w, 2), round(c, 2)] for w, c in vs] for k, vs in res.items()}}


def evict_page_cache(root: Path) -> int:
    """Drop every file under `root` from the page cache (posix_fadvise DONTNEED: per file, no root rights, the
    rest of the machine untouched), so the next read comes from the disk. Returns the number of files."""
    n = 0
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped: write them first
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            n += 1
    return n


def cold_section(root: Path, folder: Path, manifest: Path, args) -> dict:
    """Cold page cache, per core: every side starts with its files evicted, and times fewer samples than one
    epoch, so each one is read from the disk: shards vs a folder of file pairs, both with lakd's transform."""
    samples = min(args.samples, args.num_images - args.batch_size)
    res = {"shards": [], "folder_lakd_transform": []}
    for r in range(args.repeats):
        evict_page_cache(root)
        stream = build_train_loader(manifest, batch_size=args.batch_size, crop_size=args.crop, seed=r,
                                    num_workers=0)
        res["shards"].append(measure_batches(stream, args.batch_size, samples, warmup=0))
        stream.close()
        evict_page_cache(root)
        dl = torch.utils.data.DataLoader(FolderLakdTransform(folder, args.crop[0]), batch_size=args.batch_size,
                                         shuffle=True, num_workers=0, drop_last=True)
        res["folder_lakd_transform"].append(measure_batches(_forever(dl), args.batch_size, samples, warmup=0))
    best, cpu = _best(res)
    return {**{k: round(v, 2) for k, v in best.items()}, "timed_samples": samples,
            "ratio_same_transform": round(best["shards"] / best["folder_lakd_transform"], 3),
            "cpu_ratio_same_transform": round(cpu["shards"] / cpu["folder_lakd_transform"], 3),
            "runs": {k: [[round(w, 2), round(c, 2)] for w, c in vs] for k, vs in res.items()}}


def print_cold(c: dict) -> None:
    print(f"cold page cache ({c['timed_samples']} samples per side, every file evicted first): shards "
          f"{c['shards']:.2f}, folder with lakd's transform {c['folder_lakd_transform']:.2f} samples/s: "
          f"shards / folder {c['ratio_same_transform']:.2f} (per CPU-s {c['cpu_ratio_same_transform']:.2f})")


def print_cpu(c: dict) -> None:
    print(f"{'page-cached, per core':<40s} {'samples/s':>10s} {'per CPU-s':>10s}")
    for key, what in (("shards", "lakd shards (tar stream)"), ("folder", "folder of file pairs (reference)"),
                      ("folder_lakd_transform", "folder, lakd crop-first transform")):
        print(f"{what:<40s} {c[key]:10.2f} {c['cpu_rate'][key]:10.2f}")
    print(f"shards / folder {c['ratio']:.2f} (goal >= 1.5) = transform {c['ratio_transform']:.2f} "
          f"x storage {c['ratio_same_transform']:.2f} (shards / folder with the same transform); per CPU-s: "
          f"{c['cpu_ratio']:.2f}, storage {c['cpu_ratio_same_transform']:.2f}")


def print_http(h: dict) -> None:
    print(f"{'added ms/request':>16s} {'folder_http':>12s} {'shards_http':>12s} {'shards_pipe':>12s} "
          f"{'shards/folder':>14s} {'per CPU-s':>10s} {'GETs/sample folder, shards':>28s}")
    for lat, r in h.items():
        q = r["requests_per_sample"]
        print(f"{lat:>16s} {r['folder_http']:12.2f} {r['shards_http']:12.2f} {r['shards_pipe']:12.2f} "
              f"{r['ratio_shards_http']:14.2f} {r['cpu_ratio_shards_http']:10.2f} "
              f"{q['folder_http']:>14.2f}, {q['shards_http']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=48)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--crop", type=parse_crop, default=(512, 512), help="N or H,W")
    ap.add_argument("--sections", default="cpu,cold,http",
                    help="comma-separated: cpu (page-cached, per core), cold (page cache evicted before each "
                         "side), http (remote storage with latency); or "
                         "loader alone (all-cores loader, for benchmarks/gpu.py)")
    ap.add_argument("--latencies-ms", default="0,1,5", help="http section: added latency per request")
    ap.add_argument("--samples-per-shard", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="loader section: worker processes (default: all CPUs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--samples", type=int, default=96, help="timed samples per side (after one warm-up batch)")
    ap.add_argument("--repeats", type=int, default=2, help="alternate the sides this many times, keep the best")
    ap.add_argument("--json", default="benchmarks/results/bench_data.json")
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    if sections == ["loader"]:
        return main_loader(args)
    unknown = set(sections) - {"cpu", "cold", "http"}
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose cpu,cold,http or loader")
    args.latencies_ms = [float(v) for v in args.latencies_ms.split(",")]
    if args.crop[0] != args.crop[1]:
        ap.error("sections cpu and http take a square --crop")
    torch.set_num_threads(1)
    random.seed(0)
    out = {"benchmark": "data_throughput", "unit": "samples/s per core (1 process, 1 thread)"}
    with tempfile.TemporaryDirectory(prefix="lakd-bench-") as tmp:
        t0 = time.perf_counter()
        folder, manifest = make_data(Path(tmp), args.num_images, args.height, args.width,
                                     samples_per_shard=args.samples_per_shard)
        out["data_prep_s"] = round(time.perf_counter() - t0, 1)
        if "cpu" in sections:
            out["cpu"] = cpu_section(folder, manifest, args)
            print_cpu(out["cpu"])
        if "cold" in sections:
            out["cold"] = cold_section(Path(tmp), folder, manifest, args)
            print_cold(out["cold"])
        if "http" in sections:
            out["http"] = http_section(Path(tmp), folder, manifest, args)
            print_http(out["http"])
    out["config"] = {"images": args.num_images, "image_size": [args.height, args.width], "crop": list(args.crop),
                     "batch_size": args.batch_size, "timed_samples": args.samples, "repeats": args.repeats,
                     "samples_per_shard": args.samples_per_shard, "threads": 1, "processes": 1}
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                      "load_avg_1m": round(os.getloadavg()[0], 2)}
    out["lakd_version"] = lakd.__version__
    print(f"({args.num_images} JPEG {args.height}x{args.width} images, {args.crop[0]}x{args.crop[1]} crops, "
          f"1 process x 1 thread, best of {args.repeats}; 1-min load average {out['machine']['load_avg_1m']} on "
          f"{out['machine']['cpus']} CPUs)")
    return emit(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
