"""checks.py: the option, folder and size checks scripts run before any work, on tiny inputs."""

import argparse
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import checks
from errors import UserError


def test_check_numbers_names_the_first_option_out_of_range():
    args = argparse.Namespace(count=2, workers=0, rate=0.5)
    checks.check_numbers(args, at_least_one=["count"], at_least_zero=["workers"], above_zero=["rate"])
    for name, value, rule in (("count", 0, "must be at least 1"), ("workers", -1, "must be 0 or more"),
                              ("rate", 0.0, "must be greater than 0"), ("rate", float("nan"), "must be greater than 0"),
                              ("workers", float("inf"), "must be 0 or more")):
        bad = argparse.Namespace(**dict(vars(args), **{name: value}))
        with pytest.raises(UserError, match=f"^--{name} {rule}, got {value}$"):
            checks.check_numbers(bad, at_least_one=["count"], at_least_zero=["workers"], above_zero=["rate"])
    with pytest.raises(UserError, match="^--count "):  # the first rule's option is named first
        checks.check_numbers(argparse.Namespace(count=0, workers=-1), at_least_zero=["workers"], at_least_one=["count"])


def test_check_writable_folder_creates_it_and_refuses_a_file(tmp_path):
    folder = tmp_path / "a" / "b"
    checks.check_writable_folder(str(folder), "--out")
    assert folder.is_dir() and os.listdir(folder) == []  # the probe file is gone
    somefile = tmp_path / "somefile"
    somefile.write_text("x")
    with pytest.raises(UserError, match="^--out .*somefile is a file, not a folder"):
        checks.check_writable_folder(str(somefile), "--out")


def test_format_bytes():
    assert checks.format_bytes(999_999) == "999999 bytes"
    assert checks.format_bytes(1_500_000) == "1.5 MB"


def test_checks_and_denoise_record_import_without_torch():
    """A script can check its options and read the --denoise choices before it loads torch."""
    code = "import sys, checks, denoise_record; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
