"""Every results file names its unit: markdown and CSV in percent (`*_pct` columns), JSON stats as fractions
with `"unit": "fraction"`."""
import csv
import io

from lakd.report import build_rows, find_results
from lakd.report.table import markdown_table, rows_csv

from test_report import runs  # noqa: F401 (the fixture: run directories of a small sweep; tests/demo is on sys.path)


def test_csv_is_percent_like_markdown_and_json_says_fraction(runs):  # noqa: F811
    (row,) = build_rows(find_results(runs))
    (line,) = list(csv.DictReader(io.StringIO(rows_csv([row]))))
    assert all(k.endswith(("_pct", "_n")) for k in line if k not in ("dataset", "student"))
    base = float(line["baseline_mean_pct"])
    assert abs(base - 100 * row.cells["baseline"].mean) < 1e-4 and 40 <= base <= 45
    assert f"{base:.1f}" in markdown_table([row])
    stat = row.as_dict()["baseline"]
    assert stat["unit"] == "fraction" and abs(stat["mean"] * 100 - base) < 1e-4
