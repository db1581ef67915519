"""Every option of lakd's commands says its default at most once in --help."""
import argparse

import pytest

from lakd.cli import build_parser


def _parsers(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


CASES = [(p, sub) for p, sub in _parsers(build_parser()) if p]


@pytest.mark.parametrize("path, parser", CASES, ids=[" ".join(p) for p, _ in CASES])
def test_one_default_per_option(path, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS):
            continue
        text = formatter._get_help_string(action) % {**vars(action), "prog": parser.prog,
                                                     "default": action.default}
        assert text.count("default") <= 1, f"lakd {' '.join(path)} {action.option_strings}: {text}"
