"""The course notebooks are committed clean and share the same shape."""

import nbformat
import pytest
from conftest import ROOT

from mmed_helpers.core.hosted import PROFILE_LINES, SETUP_CELL, colab_badge
from mmed_helpers.runner import discover_notebooks

NOTEBOOKS = discover_notebooks(ROOT / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["language"] == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("profile", "run_dir", "overrides"):
        assert f"{name} =" in tagged[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(colab_badge(path.name) + "\n\n# ")
    assert code[0].source == SETUP_CELL and PROFILE_LINES in tagged[0].source  # test_hosted runs them
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in text and "## Exercises" in text


def test_every_notebook_has_its_reviewable_script_in_step():
    """Each notebook is paired with a py:percent script (``jupytext.toml``): there is one script per notebook
    and no other, and the script holds exactly the notebook's cells (kind, source, the parameters tag). After
    editing a notebook, ``make sync`` rewrites the scripts."""
    import jupytext

    scripts = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))
    assert scripts == sorted(p.stem for p in NOTEBOOKS)
    out_of_step = []
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        script = jupytext.read(path.with_suffix(".py"), fmt="py:percent")
        ours = [(c.cell_type, c.source.rstrip(), "parameters" in c.metadata.get("tags", [])) for c in nb.cells]
        theirs = [(c.cell_type, c.source.rstrip(), "parameters" in c.metadata.get("tags", [])) for c in script.cells]
        if ours != theirs:
            out_of_step.append(path.name)
    assert not out_of_step, f"{out_of_step}: run `make sync` (jupytext --sync) and commit the scripts"


def test_the_pairing_check_sees_a_notebook_edited_without_its_script(tmp_path):
    """A notebook changed after its script was written is caught (the check above is not vacuous)."""
    import jupytext

    path = NOTEBOOKS[1]
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += "\n4. A new exercise."
    script = jupytext.read(path.with_suffix(".py"), fmt="py:percent")
    assert [c.source for c in nb.cells] != [c.source for c in script.cells]
    assert [c.source for c in nbformat.read(path, as_version=4).cells] == [c.source for c in script.cells]
