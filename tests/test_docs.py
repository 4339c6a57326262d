"""The documentation site: `mkdocs build --strict` passes (no broken link, every page in the nav), and
its command reference, generated from the parsers at build time, holds every subcommand and flag."""

import html
import os
import re
import subprocess
import sys

import pytest

from _data_helpers import REPO_ROOT
from deepyeast.commands import build_parser, names


@pytest.mark.slow
def test_mkdocs_builds_strict_with_every_command_and_flag(tmp_path):
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert res.returncode == 0, res.stderr[-4000:]
    page = html.unescape((site / "reference" / "commands" / "index.html").read_text())
    assert "<!-- deepyeast:commands -->" not in page
    for name in names():
        assert f"deepyeast {name}" in page, name
        for action in build_parser(name)._actions:
            for flag in action.option_strings:
                assert flag in page, (name, flag)
    codes = re.findall(r"<td>(\d+)</td>", page)
    assert {"0", "1", "2", "3", "130"} <= set(codes)
    for tutorial in ("own-screen", "reproduce-paper", "compare-screens", "cluster", "keras-weights", "napari"):
        assert (site / "tutorials" / tutorial / "index.html").is_file(), tutorial
    for formats in ("Images table", "cells.csv", "proteins.csv", "bundle.json"):
        assert formats in (site / "reference" / "file-formats" / "index.html").read_text(), formats


def test_readme_links_into_the_pages():
    """The README is the one-screen entry: every docs/ page it links exists."""
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(links) >= 5, links
    for link in links:
        assert os.path.isfile(os.path.join(REPO_ROOT, link)), link
