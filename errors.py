"""One error type for problems the user can fix, and the wrapper that turns it into a one-line message."""

import sys
from typing import Callable, Optional


class UserError(Exception):
    """Bad input the user can fix (missing file, wrong checkpoint, corrupt video, ...).

    Scripts print the message on one line and exit with status 2 instead of showing a traceback.
    """


def run_cli(main: Callable[[Optional[list]], Optional[int]], argv: Optional[list] = None) -> None:
    """Run a script's ``main`` and turn a ``UserError`` into ``error: <message>`` plus exit status 2."""
    try:
        status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
