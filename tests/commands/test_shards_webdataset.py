"""`lakd shards info` prints a brace URL that plain webdataset reads with the snippet of shards/README.md."""
import re
from pathlib import Path

import numpy as np
import pytest

from lakd.cli import main
from lakd.commands.shards import brace_url
from lakd.data.build import build_shards
from lakd.data.pipeline import build_eval_loader

README = Path(__file__).resolve().parents[2] / "shards" / "README.md"


def test_brace_url_forms():
    assert brace_url(["d/a-000000.tar", "d/a-000001.tar", "d/a-000002.tar"]) == "d/a-{000000..000002}.tar"
    assert brace_url(["d/a-000003.tar"]) == "d/a-000003.tar"
    assert brace_url(["d/a-000000.tar", "d/a-000005.tar"]) == "d/a-00000{0.tar,5.tar}"


def test_readme_snippet_reads_the_shards_lakd_wrote(tmp_path, capsys):
    pytest.importorskip("webdataset")
    manifest = build_shards("synthetic", "val", tmp_path, num_samples=7, image_size=24, seed=0,
                            samples_per_shard=3, workers=1, progress=False)
    assert main(["shards", "info", str(manifest)]) == 0
    url = re.search(r"^webdataset URL: (\S+)", capsys.readouterr().out, re.M).group(1)
    assert url.endswith("synthetic-val-{000000..000002}.tar")

    section = README.read_text().split("## Reading the shards with plain webdataset", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = re.sub(r'^url = ".*?"', f"url = {url!r}", code, count=1, flags=re.M)
    code += "\nseen.append((np.asarray(image), label, meta))\n"  # the loop's last sample, kept for the checks
    seen: list = []
    rows = []
    namespace = {"seen": seen}
    exec(compile(code.replace("    assert label.shape", "    rows.append(label)\n    assert label.shape"),
                 "shards/README.md", "exec"), {**namespace, "rows": rows})
    reference = [s["label"][0].numpy() for s in build_eval_loader(manifest)]
    assert len(rows) == 7 and all(np.array_equal(a, b.astype(np.uint8)) for a, b in zip(rows, reference))
    image, label, meta = seen[0]
    assert image.shape == (24, 24, 3) and label.dtype == np.uint8 and meta["index"] == 6
