"""The ``widthscan`` command (thin: parses arguments, calls the API)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="widthscan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the embedded default sweep end to end")
    demo.add_argument("--out", default="widthscan-demo", help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        print("widthscan demo: not yet (the sweep runner lands with the sweeps issue)")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
