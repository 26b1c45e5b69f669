"""Carries the top-level prompts/ and schemas/ into the package when a wheel is built.

The checkout keeps them at the top (the editable source, read in place by an editable install);
a wheel gets a copy at mcp_taskqueue/prompts/ and mcp_taskqueue/schemas/ (mcp_taskqueue/data_files.py
finds either). tests/test_wheel.py builds a wheel and compares its copy with the source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("prompts", "schemas")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs read the top-level folders in place
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "mcp_taskqueue" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
