"""One error type for problems the user can fix, and the wrapper that turns it into a one-line message.

``run_cli`` is the one place where an ``OSError`` (missing folder, permission denied, disk full, a file where a
folder should be, ...) becomes a one-line ``error:`` message instead of a traceback, for every script.
"""

import errno
import os
import shutil
import sys
from typing import Callable, Optional


class UserError(Exception):
    """Bad input the user can fix (missing file, wrong checkpoint, corrupt video, ...).

    Scripts print the message on one line and exit with status 2 instead of showing a traceback.
    """


_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another folder",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another folder",
    errno.EACCES: "permission denied: check the permissions or choose another folder",
    errno.EPERM: "operation not permitted: check the permissions or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOTDIR: "a file is in the way where a folder is needed: choose another path",
    errno.EISDIR: "a folder is in the way where a file is needed: choose another path",
    errno.EEXIST: "something already exists there: choose another path or remove it",
    errno.ENOENT: "not found: check the path",
    errno.ENAMETOOLONG: "the path is too long",
}


def free_bytes(path: str) -> Optional[int]:
    """Free space on the file system that holds ``path`` (or its nearest existing parent); None if unknown."""
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def describe_os_error(exc: OSError, action: str = "cannot access") -> str:
    """One line for an ``OSError``: what failed, on which path, and what to do."""
    names = [n for n in (exc.filename, exc.filename2) if n]
    where = " -> ".join(os.fspath(n) if not isinstance(n, int) else str(n) for n in names)
    hint = _HINTS.get(exc.errno, exc.strerror or str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and names:
        free = free_bytes(os.fspath(names[0]))
        if free is not None:
            hint += f" ({free / 1e6:.1f} MB free there)"
    return f"{action} {where}: {hint}" if where else f"{action}: {hint}"


def user_error_from_os(exc: OSError, action: str = "cannot access") -> UserError:
    """A ``UserError`` with ``describe_os_error``'s message (raise it ``from exc``)."""
    return UserError(describe_os_error(exc, action))


def run_cli(main: Callable[[Optional[list]], Optional[int]], argv: Optional[list] = None) -> None:
    """Run a script's ``main``: a ``UserError`` or ``OSError`` becomes ``error: <message>`` and exit status 2."""
    try:
        status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
