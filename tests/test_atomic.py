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


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    # A temp file named by a process that has exited (as after a SIGKILL during a save) ...
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    stale = tmp_path / f".tmp_{atomic._HOST}_{dead_pid}_abc.part"
    stale.write_bytes(b"x" * 10)
    # ... one of a live process, one of another host, and a user's file that merely looks similar.
    live = tmp_path / f".tmp_{atomic._HOST}_{os.getpid()}_def.part"
    live.write_bytes(b"y")
    other_host = tmp_path / f".tmp_00000000_{dead_pid}_ghi.part"
    other_host.write_bytes(b"z")
    user = tmp_path / ".tmp_notes.txt"
    user.write_text("mine")
    removed = atomic.remove_stale_temps(str(tmp_path))
    assert removed == [str(stale)]
    assert not stale.exists() and live.exists() and other_host.exists() and user.read_text() == "mine"


def test_atomic_path_refuses_a_folder_target(tmp_path):
    target = tmp_path / "out.pth"
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        with atomic.atomic_path(str(target)):
            pass
    assert target.is_dir() and os.listdir(tmp_path) == ["out.pth"]


def test_run_cli_turns_os_errors_into_one_line(capsys, tmp_path):
    import errno

    from errors import run_cli

    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ckpt.pth"))

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot access ") and "ckpt.pth" in err and "disk is full" in err
    assert "MB free" in err and "\n" not in err and "Traceback" not in err
