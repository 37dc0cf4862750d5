"""`medgen` command line: a thin shell over the Python API.

Each sub-command module exposes `register(subparsers)`; it sets `func(args) -> int` on its parser.
"""

from __future__ import annotations

import argparse
import sys

from medgen._version import __version__
from medgen.errors import MedgenError


class MedgenArgumentParser(argparse.ArgumentParser):
    """Argument errors of every command and sub-command print one ``medgen: error: ...`` line and exit 2, like
    every other medgen error (argparse's default prints the usage first). Sub-parsers inherit this class."""

    def error(self, message: str):
        print(f"medgen: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from medgen.cli import data as data_cmd
    from medgen.cli import describe as describe_cmd
    from medgen.cli import edit as edit_cmd
    from medgen.cli import evaluate as evaluate_cmd
    from medgen.cli import generate as generate_cmd
    from medgen.cli import models as models_cmd
    from medgen.cli import preview as preview_cmd
    from medgen.cli import read as read_cmd
    from medgen.cli import slices as slices_cmd
    from medgen.cli import text as text_cmd
    from medgen.cli import train as train_cmd

    parser = MedgenArgumentParser(prog="medgen", description="Radiology report text -> synthetic 3D CT.")
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (data_cmd, describe_cmd, edit_cmd, evaluate_cmd, generate_cmd, models_cmd, preview_cmd, read_cmd, slices_cmd, text_cmd,
                   train_cmd):
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (MedgenError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"medgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
