"""The README's promises that a test can hold it to."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    demo, tests = readme_commands()
    assert demo.endswith("kiosk demo") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_readme_says_where_stripe_offline_capture_lives():
    text = (ROOT / "README.md").read_text()
    assert "## How a payment reaches Stripe" in text and "closed mobile Terminal SDKs" in text


# -- docs/plugins.md cannot rot (datasette's test_docs checks signatures too) ------------

import dataclasses
import inspect

import kiosk
from kiosk import hookspecs

PLUGIN_DOCS = (ROOT / "docs" / "plugins.md").read_text()
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("kiosk_"))


def section(title: str, level: str = "###") -> str:
    """The text under ``level title`` up to the next heading of that level or above."""
    start = PLUGIN_DOCS.index(f"{level} {title}\n")
    rest = PLUGIN_DOCS[start + len(title) + len(level) + 2:]
    ends = [m.start() for m in re.finditer(r"^#{2,%d} " % len(level), rest, re.M)]
    return rest[:ends[0]] if ends else rest


def test_every_hook_section_shows_its_exact_signature():
    wrong = []
    for hook in HOOKS:
        params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
        if f"`{hook}({params})`" not in section(hook):
            wrong.append(f"{hook}({params})")
    assert not wrong, f"docs/plugins.md does not show these signatures: {wrong}"


def test_every_member_of_the_kiosk_view_is_documented_with_its_type():
    rows = section("The kiosk handed to hooks", "##")
    members = [name for name in dir(kiosk.KioskView) if not name.startswith("_")]
    documented = set(re.findall(r"^\| `(\w+)", rows, re.M))
    assert set(members) == documented, (set(members) ^ documented)
    for name in members:
        row = re.search(rf"^\| `{name}\b.*$", rows, re.M).group(0)
        assert row.count("|") >= 4 and row.split("|")[2].strip(), f"{name} has no type"


def test_everything_the_surface_offers_is_in_the_table():
    table = section("What `kiosk` offers a plugin", "##")
    missing = [name for name in kiosk.__all__ if f"`{name}`" not in table]
    assert not missing, missing


VALUE_TYPES = ("Payment", "Card", "SaleResult", "OfflineOffer", "Stored", "Notice", "Setting", "Command",
               "ReaderInfo", "CardResult", "Outcome", "Request", "Readiness", "Limits", "History")


@pytest.mark.parametrize("name", VALUE_TYPES)
def test_every_field_a_hook_receives_is_documented_with_its_type(name):
    cls = getattr(kiosk, name)
    missing = []
    for field in dataclasses.fields(cls):
        shown = str(field.type).replace("argparse.", "").replace("OutcomeKind", "str")
        if f"{field.name}: {shown}" not in PLUGIN_DOCS and not (name == "Outcome" and field.name == "kind"):
            missing.append(f"{field.name}: {shown}")
    assert not missing, f"docs/plugins.md does not give {name}'s fields: {missing}"


def test_the_signature_check_can_fail():
    """A wrong signature is caught: the check reads the spec, not the heading."""
    params = ", ".join(inspect.signature(hookspecs.kiosk_open_reader).parameters)
    assert params == "settings, report" and "`kiosk_open_reader(settings)`" not in PLUGIN_DOCS
