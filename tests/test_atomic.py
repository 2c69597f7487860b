"""atomic.py: files appear whole or not at all, with normal permissions."""

import os
import stat

import pytest

import atomic


def test_write_text_replaces_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic.write_text(str(path), "one\n")
    atomic.write_text(str(path), "two\n")
    assert path.read_text() == "two\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert os.listdir(path.parent) == ["metrics.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "frame.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(str(path)) as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["frame.png"]
