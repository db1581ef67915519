"""`lakd predict EXPORT IMAGES_OR_DIR... --out DIR`: segment a folder of images with a trained student.

For every input image (files named on the command line, or every image under a named folder, recursively)
it writes

- ``DIR/ids/<name>.png``: the raw class ids (train ids ``0..C-1``; 8-bit, 16-bit when C > 256), the format
  benchmark servers take;
- ``DIR/overlay/<name>.png``: the image blended with the prediction in the dataset's palette
  (``--alpha`` sets the blend);

``<name>`` keeps the path below a named folder (``a/b.jpg`` -> ``a/b.png``). Inference is ``whole`` (one
forward of the image at its own size, the reference protocol), ``slide`` (windows of ``--crop-size``;
default: the export's training crop) or ``msflip``, as in ``lakd eval``. A label-assisted teacher is refused:
it needs the ground-truth label as input, which a folder of images does not have.

Everything is checked before the first forward: the export, every image's header, the output folder.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from lakd.exit_codes import OK

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def register(subparsers) -> None:
    from lakd.commands._help import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "predict", help="segment images with an exported model: raw class-id PNGs and colour overlays",
        description="Predict every image given (files, or folders searched recursively) with an exported "
                    "image-only model (student or baseline); write raw class-id PNGs and colour overlays.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("export", help="export path (<p>, <p>.safetensors or <p>.json)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (gets ids/ and overlay/)")
    p.add_argument("--mode", choices=("whole", "slide", "msflip"), default="whole", help="inference mode")
    p.add_argument("--crop-size", type=int, nargs="+", default=None, metavar="N",
                   help="slide window (H [W]); unset: the export's training crop")
    p.add_argument("--stride", type=int, nargs="+", default=None, metavar="N",
                   help="slide stride (H [W]); unset: 2/3 of the window")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the prediction colours")
    p.add_argument("--no-overlay", action="store_true", help="write only the class-id PNGs")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward in slide mode")
    p.add_argument("--device", default=None, help="torch device; unset: cuda when available, else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _pair(values, flag: str):
    from lakd.cli import UsageError

    if values is None:
        return None
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise UsageError(f"{flag}: expected one or two positive sizes, got {' '.join(map(str, values))}")
    return (values[0], values[-1])


def find_images(inputs: list[str], out_dir: Path) -> list[tuple[Path, Path]]:
    """``[(image path, output name without suffix)]`` in a stable order; UsageError for a bad input."""
    from lakd.cli import UsageError

    found: list[tuple[Path, Path]] = []
    out_abs = out_dir.absolute()
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and out_abs not in f.absolute().parents)
            if not files:
                raise UsageError(f"{item}: no image ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            found += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        else:
            raise UsageError(f"{item}: no such file or folder")
    seen: dict[Path, Path] = {}
    for path, name in found:
        if name in seen and seen[name] != path:
            raise UsageError(f"{path} and {seen[name]} would both be written as {name}.png; "
                             "predict them in separate calls or give their common folder")
        seen[name] = path
    return [(p, n) for n, p in seen.items()]


def check_images(images: list[tuple[Path, Path]]) -> None:
    """Every image's header is readable (PIL opens lazily: the pixels are decoded later, one at a time)."""
    from PIL import Image

    from lakd.cli import UsageError

    for path, _ in images:
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 (the header is parsed by open; size proves it)
        except Exception as exc:  # PIL raises many types for bad files
            raise UsageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def palette_for(dataset: str, num_classes: int):
    """``uint8 [256, 3]`` colours: the dataset card's palette, else fixed pseudo-random colours."""
    import numpy as np

    from lakd.data.cards import get_card

    pal = np.random.default_rng(0).integers(0, 256, size=(256, 3)).astype(np.uint8)
    try:
        card = get_card(dataset)
        pal[: card.num_classes] = np.asarray(card.palette, dtype=np.uint8)
    except ValueError:
        pass
    return pal


def ids_png(pred) -> bytes:
    """A class-id map as PNG bytes: 8-bit grey up to 256 classes, 16-bit beyond."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    if int(pred.max(initial=0)) < 256:
        Image.fromarray(pred.astype(np.uint8), mode="L").save(buf, format="PNG")
    else:
        Image.fromarray(pred.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(rgb, pred, palette, alpha: float) -> bytes:
    import numpy as np
    from PIL import Image

    colours = palette[np.clip(pred, 0, 255)].astype(np.float32)
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    buf = io.BytesIO()
    Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _device(arg):
    import torch

    from lakd.cli import UsageError

    if arg is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(arg)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {arg}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {arg}: torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {arg}: expected cpu or cuda[:N]")
    return device


def run(args) -> int:
    import numpy as np
    import torch

    from lakd.cli import UsageError
    from lakd.commands._paths import check_output_dir, probe_writable
    from lakd.io import atomic_write_bytes
    from lakd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, norm_tensors, to_normalized_chw
    from lakd.engine.progress import track
    from lakd.evaluation.inference import predict
    from lakd.models.export import load_export, read_export_meta

    crop = _pair(args.crop_size, "--crop-size")
    stride = _pair(args.stride, "--stride")
    if not 0 <= args.alpha <= 1:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = check_output_dir(args.out, "--out")
    try:
        meta = read_export_meta(args.export)
    except ValueError as exc:
        raise UsageError(f"export: {exc}") from None
    k = int(meta.get("label_channels", 0))
    if k > 0:
        raise UsageError(f"{args.export} is a label-assisted teacher ({k} label channel(s)): it needs the "
                         "ground-truth label as input, which plain images do not have. Predict with a student "
                         "or baseline export; evaluate the teacher with `lakd eval --label-input`")
    if args.mode == "slide" and crop is None:
        known = meta.get("crop_size")
        if not known:
            raise UsageError("--mode slide needs --crop-size (the export records no training crop size)")
        crop = _pair(list(known) if isinstance(known, (list, tuple)) else [known], "export crop_size")
    images = find_images(args.inputs, out)
    check_images(images)
    device = _device(args.device)
    try:
        model, meta = load_export(args.export, map_location=device)
    except (ValueError, OSError) as exc:
        raise UsageError(f"export: {exc}") from None
    from lakd.commands._dataset_card import use_export_card

    note = use_export_card(meta)  # a folder dataset's palette comes from its card
    if note:
        print(f"lakd predict: note: {note}", file=sys.stderr)
    mean_t, std_t = norm_tensors(meta.get("mean") or IMAGENET_MEAN, meta.get("std") or IMAGENET_STD)
    palette = palette_for(str(meta.get("dataset", "")), int(meta["num_classes"]))
    kinds = ("ids",) if args.no_overlay else ("ids", "overlay")
    for kind in kinds:
        probe_writable(out / kind, "--out")

    from PIL import Image

    for path, name in track(images, total=len(images), desc="lakd predict", unit="images",
                            enabled=not args.no_progress):
        try:
            with Image.open(path) as im:
                rgb_image = im.convert("RGB")
        except Exception as exc:  # decoded only now: a truncated body passes the header check
            raise UsageError(f"{path}: cannot decode the image ({type(exc).__name__}: {exc})") from None
        x = to_normalized_chw(rgb_image, mean_t, std_t)[None].to(device)
        with torch.no_grad():
            scores = predict(model, x, mode=args.mode, crop_size=crop if args.mode != "whole" else None,
                             stride=stride, batch_size=args.batch_size)
        pred = scores.argmax(1)[0].cpu().numpy().astype(np.int64)
        for kind in kinds:
            target = out / kind / name.with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = ids_png(pred) if kind == "ids" else overlay_png(np.asarray(rgb_image), pred, palette, args.alpha)
            atomic_write_bytes(target, data)
    print(f"lakd predict: {len(images)} image(s) -> {out / 'ids'}" +
          ("" if args.no_overlay else f" and {out / 'overlay'}"), file=sys.stderr)
    return OK
