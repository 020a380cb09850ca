"""The package's shape holds: core imports nothing above it, steps import only core, and no notebook or helper
outside the run layout spells a step folder or an artifact path."""

import ast
import re
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT

from mmed_helpers.core.layout import STEPS, RunLayout
from mmed_helpers.runner import discover_notebooks

PKG = ROOT / "mmed_helpers"
NOTEBOOKS = discover_notebooks(ROOT / "notebooks")
# step modules that may import a sibling step (both belong to the same notebook)
SAME_STEP = {("translate", "ccts"), ("evaluate", "benchmarks"), ("mergecheck", "train")}
# the one step that composes the earlier ones: notebook 06 trains and scores variants through 02-05's API (no step
# imports it back, so there is no cycle)
COMPOSES = {"ablations": {"train", "evaluate", "benchmarks", "translate"}}


def _imports(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute names of the ``mmed_helpers`` modules ``path`` imports (anywhere in the file)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            names = [name] if node.module else [f"{name}.{a.name}" for a in node.names]
            out += [n for n in names if n.startswith("mmed_helpers")]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("mmed_helpers")]
    return out


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("core", "steps") else "tools"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down_only(path):
    me = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for target in _imports(path):
        if _layer(me) == "core":
            assert _layer(target) == "core", f"{me} (a foundation) imports {target}"
        elif _layer(me) == "steps" and _layer(target) == "steps" and not target.endswith("steps"):
            pair = (me.split(".")[2], target.split(".")[2])
            allowed = pair in SAME_STEP or pair[0] == pair[1] or pair[1] in COMPOSES.get(pair[0], ())
            assert allowed, f"step {me} imports another step: {target}"
        elif _layer(me) == "steps":
            assert _layer(target) == "core", f"step {me} imports the tool {target}"


def test_the_import_check_sees_a_violation(tmp_path):
    """A planted upward import is caught (the check above is not vacuous)."""
    fake = tmp_path / "mmed_helpers" / "core" / "planted.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..steps.train import train_stage\nfrom . import layout\nimport mmed_helpers.cli\n")
    found = _imports(fake, root=tmp_path)
    assert found == ["mmed_helpers.steps.train", "mmed_helpers.core.layout", "mmed_helpers.cli"]
    assert [_layer(t) for t in found] == ["steps", "core", "tools"]


# --------------------------------------------------------------------------- no path spelled outside the layout

ARTIFACT_FILES = {
    Path(a.rel).name for a in RunLayout.artifacts().values() if "." in Path(a.rel).name or "mmed_ift" in a.rel
} | {"log_history.json", "forward.jsonl", "backward.jsonl", "condense.jsonl"}


def _code_strings(source: str) -> list[str]:
    """String constants of ``source`` that are not documentation (docstrings, attribute docstrings: any string
    standing alone as a statement)."""
    tree = ast.parse(source)
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def _spelled_paths(source: str) -> list[str]:
    bad = []
    for s in _code_strings(source):
        if any(folder in s for folder in STEPS.values()) or s in ARTIFACT_FILES:
            bad.append(s)
    return bad


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PKG.rglob("*.py")) if p.name != "layout.py"],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_helpers_name_no_step_folder_or_artifact(path):
    assert _spelled_paths(path.read_text(encoding="utf-8")) == []


def _notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":  # IPython magics and shell escapes are not Python
            lines += [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_ask_the_layout_for_paths(path):
    code = _notebook_code(path)
    assert _spelled_paths(code) == []
    # no path built by hand from a run folder: only the step's own figures are named in the notebook
    joins = re.findall(r"[\w)\]]\s*/\s*\"([^\"]+)\"", code)
    assert [j for j in joins if not j.endswith(".png")] == []


def test_the_path_check_sees_a_violation():
    planted = 'data = [step.run_dir / "01_generate_qa" / "mmed_ift"]\nx = "scores.jsonl"\n'
    assert sorted(_spelled_paths(planted)) == ["01_generate_qa", "mmed_ift", "scores.jsonl"]


def test_every_notebook_is_a_step_of_the_layout():
    """Each notebook names its own step with ``start(<key>)``, and the key's folder is the notebook's name."""
    assert [p.stem for p in NOTEBOOKS] == list(STEPS.values())
    for path in NOTEBOOKS:
        keys = re.findall(r"\bstart\(\s*\"(\w+)\"", _notebook_code(path))
        assert len(keys) == 1 and STEPS[keys[0]] == path.stem, path.name


def _expand(path: str, previous: str) -> list[str]:
    """``…/x`` is ``x`` beside ``previous``; ``a/{b,c}.jsonl`` is two paths."""
    if path.startswith("…/"):
        path = previous.rsplit("/", 1)[0] + path[1:]
    m = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", path)
    return [f"{m[1]}{part}{m[3]}" for part in m[2].split(",")] if m else [path]


def test_readme_data_flow_table_matches_the_layout():
    """The README's table of artifacts is documentation of ``RunLayout``; it may not drift from it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("What flows from step to step", 1)[1].split("\n\n", 2)[1]
    rows = [ln.split("|")[1:3] for ln in section.splitlines() if ln.startswith("| `")]
    assert len(rows) >= 8
    artifacts = RunLayout.artifacts()
    for names_cell, paths_cell in rows:
        names = re.findall(r"`(\w+)`", names_cell)
        paths: list[str] = []
        for raw in re.findall(r"`([^`]+)`", paths_cell):
            paths += _expand(raw, paths[-1] if paths else "")
        rels = [artifacts[n].rel for n in names]  # a name the layout does not know fails here
        for p in paths:
            assert any(p == r or p.startswith(r + "/") for r in rels), (p, rels)
        for r in rels:
            assert any(p == r or p.startswith(r + "/") for p in paths), (r, paths)


def test_no_step_imports_the_step_that_composes_them():
    """The composing step (06's ``ablations``) sits on top: no other step imports it, so the imports keep no cycle."""
    for path in sorted((PKG / "steps").glob("*.py")):
        if path.stem in COMPOSES:
            continue
        assert not [t for t in _imports(path) if t.split(".")[-1] in COMPOSES or ".ablations" in t], path.name
