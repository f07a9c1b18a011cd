"""The "requeue?" column a scheduler reads: klassterfork/exit_codes.py's table
and docs/long_runs.md's agree on every status (issue 24)."""

import re
from pathlib import Path

from klassterfork import exit_codes

ROOT = Path(__file__).resolve().parents[1]


def requeue_column(text, column):
    """{status: "yes" | "no" | "if"} from the table rows of `text`."""
    out = {}
    for row in re.findall(r"^\| ([\d, ]+) \|(.*)$", text, re.MULTILINE):
        cells = [c.strip() for c in row[1].split("|")]
        answer = cells[column]
        for status in row[0].split(","):
            out[int(status)] = "if" if answer.startswith("if ") else answer
    return out


def test_the_docstring_and_the_guide_agree_on_what_to_requeue():
    code = requeue_column(exit_codes.__doc__, 1)
    guide = (ROOT / "docs" / "long_runs.md").read_text().split("## Exit statuses")[1]
    assert requeue_column(guide, 2) == code
    assert set(code) == set(exit_codes.MEANINGS)
    # What a scheduler must do (issue 24): requeue 75 / 76, never 1 / 2.
    assert [code[s] for s in (75, 76, 1, 2)] == ["yes", "yes", "no", "no"]
