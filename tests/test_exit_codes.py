"""Every exit status in klassterfork/exit_codes.py is documented, with the
same number, in docs/long_runs.md and the README's "Long runs" section."""

import re
import signal
from pathlib import Path

from klassterfork import exit_codes

ROOT = Path(__file__).resolve().parents[1]


def statuses():
    names = {k: v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}
    codes = {v for k, v in names.items() if k != "SIGNAL_BASE"}
    codes |= {exit_codes.SIGNAL_BASE + s for s in (signal.SIGINT, signal.SIGTERM)}
    return names, codes


def table_statuses(text):
    return {int(x) for row in re.findall(r"^\| ([\d, ]+) \|", text, re.MULTILINE)
            for x in row.split(",")}


def test_every_status_is_in_the_docs_and_the_readme():
    names, codes = statuses()
    assert set(exit_codes.MEANINGS) == codes
    guide = (ROOT / "docs" / "long_runs.md").read_text()
    assert table_statuses(guide.split("## Exit statuses")[1]) == codes
    for name in names:
        assert f"`{name}`" in guide, name
    readme = (ROOT / "README.md").read_text().split("## Long runs")[1].split("\n## ")[0]
    assert table_statuses(readme) == codes
