"""The README's promises that a test can hold it to."""
from __future__ import annotations

import re

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
