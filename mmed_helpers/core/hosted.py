"""Where the course is published, and how a notebook opened on a hosted service (Colab, Kaggle) sets itself up.

Each notebook opens with an "Open in Colab" badge (:func:`colab_badge`) and, as its first code cell,
:data:`SETUP_CELL`: on Colab or Kaggle it installs the course with its GPU extra from :data:`REPOSITORY` and
selects the ``colab`` profile; anywhere else it does nothing. The cell runs before the course is installed, so
it cannot import this module: its text is kept here and a test holds every notebook's copy to it.

    >>> colab_url("00_setup.ipynb")
    'https://colab.research.google.com/github/mmed-course/mmed-course/blob/main/notebooks/00_setup.ipynb'
"""

from __future__ import annotations

from .flags import PROFILE

REPOSITORY = "https://github.com/mmed-course/mmed-course"
"""The course's repository (pyproject's ``Repository`` URL); badges point at its ``main`` branch."""
BRANCH = "main"
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
"""The badge image every Colab link uses; the offline book shows its own copy (``book/_static``) instead."""
HOSTED_PROFILE = "colab"
"""The profile a hosted notebook selects: one 16 GB GPU (a free Colab or Kaggle T4)."""
INSTALL_REQUIREMENT = f"mmed-course[gpu] @ git+{REPOSITORY}@{BRANCH}"
"""What the setup cell installs: the course from the repository, with Unsloth (the ``gpu`` extra)."""


def colab_url(notebook: str) -> str:
    """The Colab address of ``notebook`` (a file name in ``notebooks/``) on the repository's main branch."""
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """The Markdown badge that opens ``notebook`` in Colab."""
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({colab_url(notebook)})"


SETUP_CELL = f'''\
# Colab or Kaggle only: install the course (GPU extra) and use the `{HOSTED_PROFILE}` profile, a few minutes
# once per session. Anywhere else this cell does nothing: install with `make venv` (see the README).
import os
import sys

if "google.colab" in sys.modules or {{"COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE"}} & set(os.environ):
    import subprocess

    requirement = "{INSTALL_REQUIREMENT}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
    os.environ.setdefault("{PROFILE}", "{HOSTED_PROFILE}")'''
"""The first code cell of every notebook (the test compares each notebook's copy with this text)."""

PROFILE_LINES = f'''import os

profile = os.environ.get("{PROFILE}", "smoke")   # smoke | colab | full | path to your own YAML'''
"""The parameters cell's profile lines: what the setup cell chose, else ``smoke`` (papermill overrides it)."""
