"""Build script for the pyflow C++ extension; everything else is declared in pyproject.toml."""

import glob
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

extra_compile_args = ["-O3", "-ffp-contract=off"] if sys.platform != "win32" else ["/O2", "/fp:precise"]

ext_modules = [
    Pybind11Extension(
        "pyflow._pyflow",
        sorted(glob.glob("pyflow/csrc/*.cpp")),
        include_dirs=["pyflow/csrc"],
        cxx_std=17,
        extra_compile_args=extra_compile_args,
    )
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
