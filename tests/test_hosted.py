"""Colab and Kaggle: every notebook carries the badge and the setup cell (one text, in ``core.hosted``), the cell
installs the course from the repository pyproject names and picks the ``colab`` profile only on those services,
and the parameters cell then opens the notebook on that profile (else ``smoke``)."""

import json
import os
import re
import subprocess
import sys
import tomllib

import nbformat
import pytest
from conftest import ROOT
from packaging.requirements import Requirement

from mmed_helpers.core.flags import PROFILE
from mmed_helpers.core.hosted import (
    BRANCH,
    HOSTED_PROFILE,
    INSTALL_REQUIREMENT,
    REPOSITORY,
    SETUP_CELL,
    colab_badge,
    colab_url,
)
from mmed_helpers.runner import discover_notebooks

NOTEBOOKS = discover_notebooks(ROOT / "notebooks")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_setup_cell_installs_this_project_with_its_gpu_extra_from_its_repository():
    req = Requirement(INSTALL_REQUIREMENT)
    assert req.name == PYPROJECT["project"]["name"]
    assert req.extras == {"gpu"} and "gpu" in PYPROJECT["project"]["optional-dependencies"]
    assert req.url == f"git+{PYPROJECT['project']['urls']['Repository']}@{BRANCH}" == f"git+{REPOSITORY}@main"
    assert f'"{INSTALL_REQUIREMENT}"' in SETUP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_and_the_course_map_open_in_colab(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].source.startswith(colab_badge(path.name))
    assert colab_url(path.name).endswith(f"/blob/main/notebooks/{path.name}")
    assert next(c for c in nb.cells if c.cell_type == "code").source == SETUP_CELL
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| `{path.stem}` |"))
    assert colab_badge(path.name) in row


def _first_cells(tmp_path, env: dict[str, str], colab: bool = False) -> tuple[str, list[list[str]]]:
    """Run notebook 00's setup and parameters cells as a kernel would (plain Python here), with pip replaced by a
    recorder of the command it was given. Returns the profile the notebook opens with and the commands."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    record = tmp_path / "commands.jsonl"
    recorder = tmp_path / "python"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    recorder.chmod(0o755)
    program = "\n".join(
        [
            "import sys, types",
            "sys.modules['google.colab'] = types.ModuleType('google.colab')" if colab else "",
            f"sys.executable = {str(recorder)!r}",
            f"exec({code[0]!r})",
            f"exec({code[1]!r})",
            "print(profile)",
        ]
    )
    clean = {k: v for k, v in os.environ.items() if k not in (PROFILE, "KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG")}
    out = subprocess.run([sys.executable, "-c", program], env={**clean, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    commands = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return out.stdout.strip(), commands


def test_outside_colab_and_kaggle_the_setup_cell_does_nothing(tmp_path):
    assert _first_cells(tmp_path, {}) == ("smoke", [])
    assert _first_cells(tmp_path, {PROFILE: "full"}) == ("full", [])  # a profile chosen by the user is kept


@pytest.mark.parametrize("where", ["kaggle", "colab", "colab_env"])
def test_on_colab_or_kaggle_it_installs_the_course_and_opens_on_the_colab_profile(tmp_path, where):
    env = {"kaggle": {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "colab_env": {"COLAB_RELEASE_TAG": "release"}}.get(
        where, {}
    )
    profile, commands = _first_cells(tmp_path, env, colab=where == "colab")
    assert profile == HOSTED_PROFILE
    assert commands == [["-m", "pip", "install", "-q", INSTALL_REQUIREMENT]]


def test_the_book_shows_its_own_badge_image(tmp_path):
    """The book is built offline: a notebook page takes the badge image from ``book/_static`` (the link still
    points at Colab), so no page asks the network for it."""
    from mmed_helpers.book import LOCAL_BADGE, copy_for_book

    dest = tmp_path / "notebooks" / NOTEBOOKS[0].name
    dest.parent.mkdir()
    copy_for_book(NOTEBOOKS[0], dest)
    first = json.loads(dest.read_text())["cells"][0]["source"]
    assert re.search(
        rf"\[!\[Open In Colab\]\({re.escape(LOCAL_BADGE)}\)\]\({re.escape(colab_url(dest.name))}\)", "".join(first)
    )
    assert (dest.parent / LOCAL_BADGE).resolve() == (tmp_path / "_static" / "colab-badge.svg")
    assert (ROOT / "book" / "_static" / "colab-badge.svg").read_text().startswith("<svg")
