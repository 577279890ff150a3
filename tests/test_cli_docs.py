"""docs/CLI.md is generated from the specs and matches what each command's --help prints; the README's
command table and the umbrella's list cannot drift from the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from expecter import expect

from support.daemons import run_script
from zibrato.components.docs import command_names, generate
from zibrato.components.spec import DestinationSpec, find

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "CLI.md"


def test_docs_cli_md_is_what_the_generator_writes():
    assert CLI_MD.read_text(encoding="utf-8") == generate(), "docs/CLI.md is stale: python -m zibrato.components.docs"


def _documented_help(name: str) -> str:
    text = CLI_MD.read_text(encoding="utf-8")
    title = f"## `zibrato {name}`" if name in ("demo", "status", "keys") else f"## `zibrato-{name}`"
    section = text.split(title, 1)[1]
    return section.split("```text\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("name", [n for n in command_names() if n not in ("demo", "status", "keys")])
def test_each_section_is_what_the_console_script_prints(name):
    shown = run_script(f"zibrato-{name}", "--help", env={"COLUMNS": "100"})
    expect(shown.returncode) == 0
    expect(shown.stdout) == _documented_help(name)


def test_the_umbrella_lists_every_registered_command():
    shown = run_script("zibrato", "--help", env={"COLUMNS": "100"}).stdout
    listed = re.findall(r"^  (\S+)  ", shown.split("Commands:", 1)[1], re.M)
    expect(listed) == [
        "broker",
        "listen",
        *sorted(set(command_names()) - {"broker", "listen", "demo", "status", "keys"}),
        "demo",
        "status",
        "keys",
    ]


def test_the_readme_table_names_every_command_with_its_default_flush():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `zibrato[- ]([\w-]+)` \|[^|]*\|\s*([\d.]*)\s*\|", section, re.M)
    }
    expect(sorted(rows)) == sorted(command_names())
    for name in command_names():
        spec = find(name)
        if isinstance(spec, DestinationSpec):
            expect((name, float(rows[name]))) == (name, spec.default_flush)
        else:
            expect((name, rows[name])) == (name, "")
