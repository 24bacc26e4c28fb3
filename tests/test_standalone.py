"""A clone of this repository stands alone: nothing refers to files beside it.

A user's clone from GitHub has no sibling folder "shared" (the specs and the seed
the project was started from): every tracked file is checked for a path into it
(this file spells the pattern in pieces, so it names no such path itself), the seed
contract is read from the repository's own copy, and the README links every
RFC it names by its public address.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIBLING = "shared"
OUTSIDE = re.compile(rf"\.\./{SIBLING}\b|/work/{SIBLING}\b")


def tracked_files():
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    return [ROOT / p for p in out.stdout.split("\0") if p]


@pytest.mark.unit
def test_no_file_refers_outside_the_repository():
    this = Path(__file__).resolve()
    found = []
    for path in tracked_files():
        if path == this or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, (f"Files refer to the sibling folder {SIBLING}/, which a clone does not "
                       "have:\n" + "\n".join(found))


@pytest.mark.unit
def test_readme_links_every_rfc_it_names():
    readme = (ROOT / "README.md").read_text()
    for number in sorted(set(re.findall(r"RFC (\d{4})", readme))):
        link = f"https://www.rfc-editor.org/rfc/rfc{number}"
        assert f"[RFC {number}]({link})" in readme, f"README.md should link RFC {number} as {link}."
