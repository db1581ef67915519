"""One ``(default: X)`` per option in ``--help``: the formatter the commands share."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Like ArgumentDefaultsHelpFormatter, but adds nothing where the help already says its default (a
    hand-written "(default: min(8, CPUs))" beats "(default: None)") or where there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
