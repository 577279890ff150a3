"""The supported Python versions are stated once and checked where they are promised."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from expecter import expect

ROOT = Path(__file__).resolve().parent.parent
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def test_setup_py_states_the_supported_versions():
    setup = (ROOT / "setup.py").read_text()
    expect(re.search(r'python_requires="([^"]+)"', setup).group(1)) == ">=3.10"
    stated = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', setup)
    expect(stated) == SUPPORTED


def test_bin_test_checks_the_oldest_and_newest_supported_versions():
    expect((ROOT / "bin" / "test").read_text()).contains("bin/test-versions")
    expect((ROOT / "bin" / "test-versions").read_text()).contains(f"for version in {SUPPORTED[0]} {SUPPORTED[-1]}; do")


def test_readme_states_the_supported_versions():
    readme = (ROOT / "README.md").read_text()
    expect(readme).contains("Supported Python: 3.10, 3.11, 3.12 and 3.13")
    expect("3.9+" in readme) == False


def test_this_interpreter_is_supported():
    expect(f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED) == True
