"""Atomic file writes: write beside the target, then rename over it, so a crash never leaves a half-written file.

Every file the project writes for the user (checkpoints, frames, videos, logs, plots, flow caches) goes through here.
"""

import contextlib
import os
import tempfile
from typing import Iterator, Optional


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would have given the file


@contextlib.contextmanager
def atomic_path(path: str, suffix: Optional[str] = None) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (same extension unless ``suffix``); when the block succeeds the
    file gets the usual permissions and replaces ``path``, otherwise it is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=ext, dir=folder)
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
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines as given)."""
    write_bytes(path, text.encode("utf-8"))
