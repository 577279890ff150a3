"""`zibrato --version` names the version, and CHANGELOG.md has an entry for it."""

from __future__ import annotations

import re
from pathlib import Path

from expecter import expect

import zibrato
from support.daemons import run_script

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"


def test_version_flag_prints_the_package_version():
    done = run_script("zibrato", "--version")
    expect(done.returncode) == 0
    expect(done.stdout.strip()) == f"zibrato, version {zibrato.__version__}"


def test_changelog_has_a_section_for_the_current_version():
    headings = re.findall(r"^## \[([^\]]+)\]", CHANGELOG.read_text(encoding="utf-8"), re.M)
    expect(headings[0]) == "Unreleased"
    expect(headings).contains(zibrato.__version__)
