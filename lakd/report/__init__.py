"""Reports of finished runs: results table (per seed, mean ± std, paired differences with 95% intervals and a
verdict, all in percent), per-class IoU, a bar chart of every role, loss and mIoU curves and an example grid,
written as markdown + CSV + JSON + PNG figures.

Works from the stage-output contract alone (ARCHITECTURE.md "Stage outputs": `result.json`,
`metrics.jsonl`, exports), so it reports runs made by `lakd train`, the sweep, or the demo alike
(`lakd report DIR`).
"""
from lakd.report.results import ROLE_TITLES, ROLES, StageResult, find_results, load_result, read_metrics, role_of
from lakd.report.table import Block, Stat, build_blocks, markdown_table
from lakd.report.write import ReportFiles, verdict, write_report

__all__ = [
    "ROLES", "ROLE_TITLES", "StageResult", "find_results", "load_result", "read_metrics", "role_of",
    "Block", "Stat", "build_blocks", "markdown_table", "ReportFiles", "verdict", "write_report",
]
