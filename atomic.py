"""Atomic file writes: write beside the target, then rename over it, so a crash never leaves a half-written file.

Every file the project writes for the user (checkpoints, frames, videos, logs, plots, flow caches) goes through here.
Temporary files are named ``.tmp_<host>_<pid>_<random><ext>``; ``remove_stale_temps`` deletes those left behind by a
process of this machine that no longer runs (a SIGKILL during a save), and only those.
"""

import contextlib
import errno
import hashlib
import os
import re
import socket
import tempfile
from typing import Iterator, List, Optional

TEMP_PREFIX = ".tmp_"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would have given the file
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def owner_tag() -> str:
    """``<host>_<pid>_``: put after a prefix in temporary names, so that ``is_stale`` can tell a leftover."""
    return f"{_HOST}_{os.getpid()}_"


def _temp_prefix() -> str:
    return TEMP_PREFIX + owner_tag()


@contextlib.contextmanager
def atomic_path(path: str, suffix: Optional[str] = None) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (same extension unless ``suffix``); when the block succeeds the
    file gets the usual permissions and replaces ``path``, otherwise it is removed and ``path`` is untouched."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), suffix=ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (``fsync`` first for files that must survive a power cut)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given)."""
    write_bytes(path, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(name: str, prefix: str) -> bool:
    """True when ``name`` is ``<prefix><host>_<pid>_...`` (``owner_tag``) of this host and that process is gone."""
    match = re.match(re.escape(prefix) + r"([0-9a-f]{8})_(\d+)_", name)
    if not match or match.group(1) != _HOST:
        return False
    pid = int(match.group(2))
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temps(folder: str) -> List[str]:
    """Delete our temporary files in ``folder`` whose writer (a process of this host) is gone; returns their paths.

    Files of other hosts (a shared file system), of running processes and of any other naming are left alone.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not is_stale(name, TEMP_PREFIX):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)
                removed.append(path)
        except OSError:
            pass
    return removed
