"""The README stays true: its two commands, its settings tables (the README's short one and
docs/settings.md's full one) and the make targets it names."""

from __future__ import annotations

import re
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from typeahead.settings import ENV_ALIASES, ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `(?P<var>[A-Z_]+)` \| (?P<default>`[^`]*`|unset) \| (?P<meaning>.+) \|$")


def env_name(name: str) -> str:
    return ENV_ALIASES.get(name, ENV_PREFIX + name.upper())


def default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory()


def rendered(value: Any) -> str:
    """A default as the README's table writes it."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def expected_rows() -> dict[str, str]:
    return {env_name(f.name): rendered(default_of(f))
            for f in fields(Settings) if f.name != "extra"}


def table_rows(text: str = SETTINGS_DOC) -> dict[str, str]:
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m["var"]: m["default"] for m in rows if m}


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.MULTILINE))


def test_every_setting_is_in_the_table_with_its_default() -> None:
    want, have = expected_rows(), table_rows()
    missing = sorted(set(want) - set(have))
    assert not missing, "docs/settings.md's table lacks: " + ", ".join(
        f"| `{var}` | {want[var]} | ... |" for var in missing)
    assert sorted(set(have) - set(want)) == [], "docs/settings.md names settings that do not exist"
    wrong = {var: (have[var], want[var]) for var in want if have[var] != want[var]}
    assert wrong == {}, f"docs/settings.md defaults (doc, Settings): {wrong}"


def test_the_readme_table_is_a_true_excerpt_of_the_full_one() -> None:
    full, short = table_rows(), table_rows(README)
    assert short and all(full.get(var) == default for var, default in short.items()), short
    lines = {line for line in SETTINGS_DOC.splitlines() if ROW.match(line)}
    assert all(line in lines for line in README.splitlines() if ROW.match(line))


def test_the_named_safety_and_curation_settings_are_documented() -> None:
    have = table_rows(README)
    for var in ("TYPEAHEAD_SAFETY_ALLOW", "TYPEAHEAD_CURATION_POLL_S", "TYPEAHEAD_CURATION_FILE"):
        assert var in have


def test_the_two_commands_are_make_targets_and_ci_runs_the_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", README, flags=re.DOTALL)
    assert "make run" in blocks and "make test" in blocks
    assert {"run", "test"} <= make_targets()
    assert re.search(r"^run:.*\n\t\$\(BIN\)/typeahead serve ", MAKEFILE, flags=re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)


def test_every_make_target_the_readme_names_exists() -> None:
    named = set(re.findall(r"`make ([a-z][a-z-]*)`", README))
    assert named and named <= make_targets(), sorted(named - make_targets())


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 260
