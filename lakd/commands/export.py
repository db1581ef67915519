"""`lakd export EXPORT --format torchscript|exported-program|onnx --out FILE`: a deployable model file.

The lakd export (``<p>.safetensors`` + ``<p>.json``) is rebuilt, wrapped in
:class:`lakd.models.traceable.SegmentationLogits` (tensor in, class scores out) and converted:

- ``torchscript``: ``torch.jit.trace``; load with ``torch.jit.load(FILE)``;
- ``exported-program``: ``torch.export.export`` with dynamic batch, height and width; load with
  ``torch.export.load(FILE).module()``;
- ``onnx``: ``torch.onnx.export`` (needs the ``onnx``, ``onnxscript`` and ``onnxruntime`` packages:
  ``pip install 'lakd[onnx]'``); run with onnxruntime.

Before the file is put in place the converted model is loaded back from disk and run on two random inputs
(the sample size and a second, smaller one in another batch size); its output must match the eager model
within ``--rtol`` of the output's magnitude, or nothing is written (exit 1). The file carries the input
contract (``mean``, ``std``, channels, class names) as ``lakd.json``: TorchScript / exported-program extra
file, ONNX metadata property.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from lakd.exit_codes import FAILED, OK

FORMATS = ("torchscript", "exported-program", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
META_NAME = "lakd.json"


def register(subparsers) -> None:
    from lakd.commands._help import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "export", help="convert an exported model to TorchScript, torch.export or ONNX (checked against eager)",
        description="Convert a lakd export (<p>.safetensors + <p>.json) into a TorchScript, torch.export "
                    "(exported-program) or ONNX file whose output is checked against the eager model.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("export", help="export path (<p>, <p>.safetensors or <p>.json)")
    p.add_argument("--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("--out", required=True, help="output file (e.g. model.pt, model.pt2, model.onnx)")
    p.add_argument("--sample-size", type=int, nargs="+", default=[256], metavar="N",
                   help="height [width] of the random sample input used for tracing and the check")
    p.add_argument("--logits", action="store_true",
                   help="output the raw logits at stride 8 instead of class scores at the input size")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="largest allowed |converted - eager|, relative to max |eager|")
    p.set_defaults(func=run)


def _size(values: list[int]) -> tuple[int, int]:
    from lakd.cli import UsageError

    if len(values) not in (1, 2) or any(v < 16 for v in values):
        raise UsageError(f"--sample-size: expected one or two sizes >= 16, got {' '.join(map(str, values))}")
    return (values[0], values[-1])


def missing_onnx_packages() -> list[str]:
    import importlib.util

    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def contract(meta: dict, fmt: str, logits: bool) -> dict:
    """What a user of the converted file needs to feed it and read its output."""
    from lakd.data.cards import get_card

    k = int(meta.get("label_channels", 0))
    try:
        class_names = list(get_card(meta.get("dataset", "")).class_names)
    except ValueError:
        class_names = None
    out = ("logits [N, C, ceil(H/8), ceil(W/8)]" if logits
           else "class scores [N, C, H, W] at the input size; argmax over C = class id")
    return {"format": fmt, "model": meta["model"], "dataset": meta.get("dataset"),
            "num_classes": int(meta["num_classes"]), "class_names": class_names, "label_channels": k,
            "mean": meta.get("mean"), "std": meta.get("std"),
            "input": f"float32 [N, {3 + k}, H, W]: RGB on the 0-255 scale, (x - mean) / std"
                     + (f", then {k} label channel(s)" if k else ""),
            "output": out}


# ------------------------------------------------------------------------------------------ converters
def _save_via_memory(save, path: Path) -> None:
    """``save(file)`` into memory, then the bytes into ``path``: torch's zip writer aborts the whole process
    (std::terminate, no Python error) when the disk fills while it writes a file itself."""
    import io

    buf = io.BytesIO()
    save(buf)
    Path(path).write_bytes(buf.getbuffer())


def _torchscript(wrapper, sample, path: Path, meta_text: str):
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(wrapper, sample)
    _save_via_memory(lambda f: torch.jit.save(traced, f, _extra_files={META_NAME: meta_text}), path)
    extra = {META_NAME: ""}
    loaded = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return loaded, extra[META_NAME]


def _exported_program(wrapper, sample, path: Path, meta_text: str):
    import torch
    from torch.export import Dim

    # height and width follow the input (AUTO: torch.export decides their valid range); batch from 1 up
    dims = {0: Dim("batch", min=1), 2: Dim.AUTO, 3: Dim.AUTO}
    program = torch.export.export(wrapper, (sample,), dynamic_shapes=(dims,))
    _save_via_memory(lambda f: torch.export.save(program, f, extra_files={META_NAME: meta_text}), path)
    extra = {META_NAME: ""}
    loaded = torch.export.load(str(path), extra_files=extra)
    return loaded.module(), extra[META_NAME]


def _onnx(wrapper, sample, path: Path, meta_text: str):
    import numpy as np
    import onnx
    import onnxruntime
    import torch
    from torch.export import Dim

    dims = {0: Dim("batch", min=1), 2: Dim.AUTO, 3: Dim.AUTO}
    torch.onnx.export(wrapper, (sample,), str(path), dynamo=True, dynamic_shapes=(dims,),
                      input_names=["image"], output_names=["scores"], external_data=False, verbose=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_NAME, meta_text
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x):
        return torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))

    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}.get(META_NAME, "")
    return run, stored


CONVERTERS = {"torchscript": _torchscript, "exported-program": _exported_program, "onnx": _onnx}


def check_against_eager(wrapper, converted, inputs, rtol: float) -> dict:
    """Largest |converted - eager| over ``inputs`` relative to max |eager|, and the argmax agreement."""
    import torch

    worst, agree, total = 0.0, 0, 0
    with torch.no_grad():
        for x in inputs:
            ref = wrapper(x).float()
            got = converted(x).float()
            if got.shape != ref.shape:
                return {"ok": False, "detail": f"output shape {list(got.shape)} != eager {list(ref.shape)} "
                                               f"for input {list(x.shape)}"}
            scale = max(1.0, float(ref.abs().max()))
            worst = max(worst, float((got - ref).abs().max()) / scale)
            agree += int((got.argmax(1) == ref.argmax(1)).sum())
            total += got.argmax(1).numel()
    return {"ok": worst <= rtol, "max_rel_diff": worst, "argmax_agreement": agree / total,
            "detail": f"max |converted - eager| / max |eager| = {worst:.2e} (rtol {rtol:g}), argmax agrees on "
                      f"{100 * agree / total:.3f}% of pixels"}


class _Failed(Exception):
    """A conversion that did not produce a faithful model: nothing is written (one line, exit 1)."""


def _convert_and_check(args, wrapper, meta: dict, doc: dict, tmp: Path, samples: list) -> dict:
    """Convert into ``tmp``, then check the metadata and the outputs against the eager model."""
    try:
        converted, stored = CONVERTERS[args.format](wrapper, samples[0], tmp, json.dumps(doc))
    except OSError:
        raise
    except Exception as exc:  # the exporters raise many types; say which step failed, keep the cause
        from lakd.io import is_disk_full

        if is_disk_full(exc, tmp.parent):  # torch's zip writer says only "iostream error"
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from exc
        raise _Failed(f"{args.format} conversion of {meta['model']['name']}-{meta['model']['backbone']} failed: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if json.loads(stored or "null") != doc:
        raise _Failed(f"the {META_NAME} metadata did not survive saving")
    check = check_against_eager(wrapper, converted, samples, args.rtol)
    if not check["ok"]:
        raise _Failed(f"the {args.format} model does not match the eager model: {check['detail']}; "
                      "nothing written")
    return check


def run(args) -> int:
    import torch

    from lakd.cli import UsageError
    from lakd.commands._paths import check_output_file
    from lakd.io import atomic_output
    from lakd.models.export import load_export
    from lakd.models.traceable import SegmentationLogits

    h, w = _size(args.sample_size)
    if not args.rtol > 0:
        raise UsageError(f"--rtol must be > 0, got {args.rtol}")
    out = check_output_file(args.out, "--out")
    if args.format == "onnx":
        missing = missing_onnx_packages()
        if missing:
            raise UsageError(f"--format onnx needs the {', '.join(missing)} package(s): "
                             f"pip install 'lakd[onnx]' (or: pip install {' '.join(missing)})")
    try:
        model, meta = load_export(args.export, map_location="cpu")
    except (ValueError, OSError) as exc:
        raise UsageError(f"export: {exc}") from None
    from lakd.commands._dataset_card import use_export_card

    note = use_export_card(meta)  # a folder dataset's class names come from its card
    if note:
        print(f"lakd export: note: {note}", file=sys.stderr)

    wrapper = SegmentationLogits(model, upsample=not args.logits).eval()
    channels = int(meta["model"]["in_channels"])
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, channels, h, w, generator=gen)  # batch 2: a batch of 1 would be specialised
    second = torch.randn(1, channels, max(16, h - 24), max(16, w - 40), generator=gen)
    doc = contract(meta, args.format, args.logits)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    try:  # written under a temporary name, renamed into place only once it passed every check
        with atomic_output(out, keep_suffix=True) as tmp:  # the suffix: torch.export checks it
            check = _convert_and_check(args, wrapper, meta, doc, tmp, [sample, second])
    except OSError as exc:
        from lakd.io import is_disk_full

        if is_disk_full(exc, out.absolute().parent):  # not bad input: exit 1, named (lakd.cli)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out)) from exc
        raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    except _Failed as exc:
        print(f"lakd export: error: {exc}", file=sys.stderr)
        return FAILED
    print(f"lakd export: {args.format} check against eager on inputs {list(sample.shape)} and "
          f"{list(second.shape)}: {check['detail']}")
    print(f"wrote {out} (input: {doc['input']}; output: {doc['output']}; metadata in {META_NAME})")
    return OK
