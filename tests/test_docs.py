"""The README and the user guides (docs/guide/) name only what exists.

* every `python -m <module>` is a runnable module of this repository (a `.py` file with a
  `__main__` guard, or a package with `__main__.py`), or one of the outside tools named in
  EXTERNAL_MODULES;
* every `make <target>` is a target of the Makefile;
* every `python -m trainer ...` and `torchrun ... -m trainer ...` line in a fenced code
  block composes on the real conf/ with Hydra's compose API. A multirun composes its first
  job (each sweep at its first value: `range(...)` its first number, `interval(...)` its
  start) and one more job per other value of a comma or `choice(...)` sweep, so every
  option named composes; Hydra's own override parser reads them. An override that
  holds a placeholder (`<time>`, `/path/to/`, `...`) is left out, the rest of its line
  still composes;
* every relative link in the README and under docs/ resolves, anchors included;
* the README stays a map: at most 12 KB.

Each distinct set of overrides is composed once (one test each, so pytest-xdist spreads
them). Commands are read from fenced code blocks only; a command in an indented code
block fails `test_commands_are_in_fenced_code_blocks`, so none can escape the check.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType

from tests.conftest import CONF, compose_cfg

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guide").glob("*.md"))
DOCS = [README, *GUIDES]  # what the commands, modules and make targets are checked in
ALL_MARKDOWN = [README, *sorted((ROOT / "docs").rglob("*.md"))]  # what the links are checked in
README_MAX_BYTES = 12 * 1024

# Modules run with `python -m` that are not part of this repository, each by name.
EXTERNAL_MODULES = {
    "pip": "the package installer (installing wheels on a GPU machine, docs/guide/performance.md)",
}

# Hydra's own command-line flags: (flag, takes a value)
HYDRA_FLAGS = {
    "-m": False,
    "--multirun": False,
    "--cfg": True,
    "-c": True,
    "--package": True,
    "-p": True,
    "--resolve": False,
    "--help": False,
    "-h": False,
    "--hydra-help": False,
}
PLACEHOLDER = re.compile(r"<[^<>]+>|/path/to/|\.\.\.")
FENCE = re.compile(r"^\s*(```|~~~)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_lines(path: Path) -> list[str]:
    """The lines of the fenced code blocks of a Markdown file, backslash continuations joined."""
    lines, block, inside = [], [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            if inside:
                lines += join_continuations(block)
                block = []
            inside = not inside
        elif inside:
            block.append(line.strip())
    return lines


def join_continuations(block: list[str]) -> list[str]:
    out, pending = [], ""
    for line in block:
        if line.endswith("\\"):
            pending += line[:-1] + " "
        else:
            out.append(pending + line)
            pending = ""
    if pending:
        out.append(pending)
    return out


def inline_code(path: Path) -> list[str]:
    """The inline code spans of a Markdown file, outside fenced blocks."""
    text, inside, prose = path.read_text(), False, []
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            prose.append(line)
    return re.findall(r"`([^`\n]+)`", "\n".join(prose))


def without_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line)


def modules_named(path: Path) -> set[str]:
    found = set()
    for code in code_lines(path) + inline_code(path):
        code = without_comment(code)
        found.update(re.findall(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*(?:<\w+>)?)", code))
        found.update(re.findall(r"\btorchrun\b.*?\s-m\s+([A-Za-z_][\w.]*)", code))
    return found


def make_targets_named(path: Path) -> set[str]:
    found = set()
    for code in code_lines(path) + inline_code(path):
        for match in re.finditer(r"(?:^|[\s;&|(])make((?:\s+[A-Z_]+=\S*)*)\s+([a-z][\w-]*)", without_comment(code)):
            found.add(match.group(2))
    return found


def trainer_arguments(line: str) -> list[str] | None:
    """The arguments after `python -m trainer` / `torchrun ... -m trainer`, or None."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):  # VAR=value before the command
        words = words[1:]
    if words[:3] in (["python", "-m", "trainer"], ["python3", "-m", "trainer"]):
        return words[3:]
    if words[:1] == ["torchrun"] and "trainer" in words:
        i = words.index("trainer")
        if words[i - 1] == "-m":
            return words[i + 1 :]
    return None


def jobs(args: list[str]) -> list[tuple[str, ...]]:
    """Hydra overrides of the jobs a command line launches, enough for every value of every
    choice to compose once: the first job (each sweep at its first value, an interval at its
    start, a range at its first number), then one job per other value of a comma or
    `choice(...)` sweep. Hydra's flags and placeholder overrides are left out."""
    parser = OverridesParser.create()
    first: list[str] = []
    others: list[tuple[int, str]] = []  # (position, override) of the other choices
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg.startswith("-"):
            assert arg in HYDRA_FLAGS, f"unknown flag {arg!r}: add it to HYDRA_FLAGS if it is Hydra's"
            skip_value = HYDRA_FLAGS[arg]
            continue
        if PLACEHOLDER.search(arg):
            continue
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            key = override.get_key_element()
            if override.value_type == ValueType.INTERVAL_SWEEP:
                values = [str(override.value().start)]
            else:
                values = list(override.sweep_string_iterator())
                if override.value_type == ValueType.RANGE_SWEEP:
                    values = values[:1]
            arg = f"{key}={values[0]}"
            others += [(len(first), f"{key}={value}") for value in values[1:]]
        first.append(arg)
    variants = [tuple(first)]
    for position, override in others:
        variants.append(tuple(first[:position] + [override] + first[position + 1 :]))
    return variants


def commands() -> dict[tuple[str, ...], list[str]]:
    """Each distinct override set of the docs' trainer command lines, with where it is shown."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in DOCS:
        for line in code_lines(path):
            args = trainer_arguments(line)
            if args is not None:
                for job in jobs(args):
                    found.setdefault(job, []).append(f"{rel(path)}: {line}")
    return found


COMMANDS = commands()


def touches_hydra(overrides: tuple[str, ...]) -> bool:
    return any(re.match(r"[+~]*hydra[./]", o) for o in overrides)


def test_the_docs_show_commands():
    # not vacuous: the README and the guides show trainer commands, modules and make targets
    assert GUIDES, "no docs/guide/*.md found"
    assert len(COMMANDS) >= 20, sorted(COMMANDS)
    assert any(where.startswith("README.md") for wheres in COMMANDS.values() for where in wheres)
    assert {"train", "test"} <= make_targets_named(README)
    assert {"trainer", "trainer.runs", "sweeps.report"} <= modules_named(README)


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_every_module_named_exists(path):
    missing = []
    for module in sorted(modules_named(path)):
        if module in EXTERNAL_MODULES:
            continue
        if module.endswith(">"):  # `python -m benchmarks.<name>`: the package must exist
            if not ROOT.joinpath(*module.split(".")[:-1]).is_dir():
                missing.append(module)
            continue
        base = ROOT.joinpath(*module.split("."))
        main = base / "__main__.py"
        file = base.with_suffix(".py")
        runnable = main.is_file() or (file.is_file() and '__name__ == "__main__"' in file.read_text())
        if not runnable:
            missing.append(module)
    assert not missing, f"{rel(path)} runs modules that do not exist or cannot run: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_every_make_target_named_exists(path):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.MULTILINE))
    missing = sorted(make_targets_named(path) - targets)
    assert not missing, f"{rel(path)} names make targets the Makefile lacks: {missing} (it has {sorted(targets)})"


@pytest.mark.parametrize("overrides", sorted(COMMANDS), ids=lambda o: " ".join(o) or "(defaults)")
def test_every_trainer_command_shown_composes(overrides):
    where = "\n".join(COMMANDS[overrides])
    if "hydra/launcher=ray" in overrides:
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the ray extra is optional")
    try:
        if touches_hydra(overrides):
            compose_with_hydra(overrides)
        else:
            compose_cfg(*overrides)
    except Exception as err:
        pytest.fail(f"does not compose: {err}\nshown at:\n{where}")


def compose_with_hydra(overrides: tuple[str, ...]):
    """compose_cfg with Hydra's own config returned: `hydra.*` and `hydra/...` overrides
    (launchers, sweepers, run dirs) are then composed and checked too."""
    from hydra import compose, initialize_config_dir

    from trainer.launch.startup import register

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_commands_are_in_fenced_code_blocks(path):
    """An indented code block would hide its commands from the checks above."""
    inside, stray = False, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside and re.match(r"^ {4,}(python3? |torchrun |make |[A-Z_]+=\S* python)", line):
            stray.append(f"{number}: {line.strip()}")
    assert not stray, f"{rel(path)}: commands outside fenced code blocks:\n" + "\n".join(stray)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, inside = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and (match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.add(slug(match.group(1)))
    return found


@pytest.mark.parametrize("path", ALL_MARKDOWN, ids=rel)
def test_relative_links_resolve(path):
    text, broken = path.read_text(), []
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1", "", text, flags=re.MULTILINE | re.DOTALL)  # not in code
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{rel(path)}: broken links {broken}"


def test_readme_is_a_map():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move details to docs/guide/ or docs/measurements/"
