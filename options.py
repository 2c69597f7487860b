"""Command-line helpers shared by the scripts: boolean options that work the original's way and the modern way, and
the choices of options that several scripts offer (kept here, free of torch, so that ``-h`` is instant)."""

import argparse
import os

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = os.path.join("weights", "iSeeBetter_x4_psnr.pth")  # relative to PROJECT_ROOT
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EDGE_MODES = ("centre", "reflect", "clamp")
DEGRADATIONS = ("pil", "matlab")
DEFAULT_OVERLAP = 16
FLOW_BACKENDS = ("auto", "cpp", "torch")  # auto: torch when the model runs on CUDA, else the exact C++ pyflow

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


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names, minimum: int = 1) -> None:
    """``parser.error`` naming the option when one of ``names`` (attribute names) is set and below ``minimum``."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {value}")
