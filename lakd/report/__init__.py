"""Reports of finished runs: results table (paper form, mean ± std over seeds), per-class IoU, training
curves and an example grid, written as markdown + CSV + JSON + PNG figures.

Works from the stage-output contract alone (ARCHITECTURE.md "Stage outputs": `result.json`,
`metrics.jsonl`, exports), so it reports runs made by `lakd train`, the sweep, or the demo alike.
"""
from lakd.report.results import ROLE_TITLES, ROLES, StageResult, find_results, load_result, read_metrics, role_of
from lakd.report.table import Row, Stat, build_rows, markdown_table
from lakd.report.write import ReportFiles, verdict, write_report

__all__ = [
    "ROLES", "ROLE_TITLES", "StageResult", "find_results", "load_result", "read_metrics", "role_of",
    "Row", "Stat", "build_rows", "markdown_table", "ReportFiles", "verdict", "write_report",
]
