"""The package installs every module of the flat layout (a module missing from py-modules breaks an install)."""

import glob
import os

import pytest
from conftest import ROOT


def test_every_root_module_is_in_py_modules():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["py-modules"])
    modules = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    assert modules - {"setup"} == listed
