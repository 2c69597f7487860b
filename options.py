"""Command-line helpers shared by the scripts: boolean options that work the original's way and the modern way."""

import argparse

TRUE_WORDS = ("1", "true", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "no", "n", "off")


def str2bool(text: str) -> bool:
    """'true'/'false' (and 1/0, yes/no, on/off, any case) -> bool; anything else is an argparse error."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def add_bool(parser, name: str, default: bool, help: str) -> None:
    """``--name``, the original's ``--name True/False``, and ``--no-name`` on ``parser`` (or an argument group)."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, nargs="?", const=True, default=default, type=str2bool,
                        metavar="BOOL", help=f"{help} (default: {default}; --no-{name} to switch off)")
    parser.add_argument(f"--no-{name}", dest=dest, action="store_false", help=argparse.SUPPRESS)
