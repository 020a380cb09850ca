import json
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mmed_helpers.cli import main
from mmed_helpers.core.config import ConfigError
from mmed_helpers.runner import RunnerError, discover_notebooks, run_course, select_notebooks

PARAMS = 'profile = "smoke"\nrun_dir = ""\noverrides = {}'


def _nb(path, *sources):
    cells = [new_code_cell(PARAMS, metadata={"tags": ["parameters"]})] + [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def course(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(
        d / "00_first.ipynb",
        "import json, pathlib\n"
        "pathlib.Path(run_dir, 'first.json').write_text(json.dumps({'profile': profile, 'overrides': overrides}))",
    )
    _nb(d / "01_second.ipynb", "import pathlib\npathlib.Path(run_dir, 'second.txt').write_text('ran')")
    _nb(d / "02_broken.ipynb", "x = 1", "raise ValueError('dose must be positive, got -5')")
    _nb(d / "03_after.ipynb", "import pathlib\npathlib.Path(run_dir, 'after.txt').write_text('ran')")
    (d / "scratch.ipynb").write_text("{}")  # not a course notebook: ignored
    return d


def test_discover_and_select(course):
    found = discover_notebooks(course)
    assert [p.name for p in found] == ["00_first.ipynb", "01_second.ipynb", "02_broken.ipynb", "03_after.ipynb"]
    assert [p.name[:2] for p in select_notebooks(found, only=[3, 1])] == ["01", "03"]
    assert [p.name[:2] for p in select_notebooks(found, start_from=2)] == ["02", "03"]
    with pytest.raises(RunnerError, match=r"no notebook numbered \[7\]"):
        select_notebooks(found, only=[7])
    with pytest.raises(RunnerError, match="no notebook numbered 9 or later"):
        select_notebooks(found, start_from=9)


def test_failing_notebook_stops_the_run_with_its_error(course, tmp_path, capsys):
    run = tmp_path / "run"
    report = run_course("smoke", run, notebooks_dir=course, overrides={"seed": 3}, progress_bar=False)
    assert not report.ok
    assert [r.status for r in report.results] == ["ok", "ok", "failed", "not run"]
    failed = report.failed
    assert failed.name == "02_broken"
    # papermill numbers the injected-parameters cell too: In [4] is what the executed copy shows
    assert "cell [4] raised ValueError: dose must be positive, got -5" in failed.error
    assert not (run / "after.txt").exists()
    # parameters were injected
    assert json.loads((run / "first.json").read_text()) == {"profile": "smoke", "overrides": {"seed": 3}}
    # executed copies (with the error) are kept; the summary is saved and printed
    executed = nbformat.read(run / "notebooks" / "02_broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["ok"] is False and summary["results"][2]["status"] == "failed"
    out = capsys.readouterr().out
    assert "FAILED 02_broken.ipynb" in out
    assert re.search(r"^02\s+02_broken\s+failed\s+[\d.]+ s$", out, re.M)
    assert re.search(r"^03\s+03_after\s+not run\s+-$", out, re.M)
    assert re.search(r"^\s+total\s+FAILED", out, re.M)


def test_only_and_from_run_just_those(course, tmp_path):
    run = tmp_path / "run"
    report = run_course("smoke", run, notebooks_dir=course, only=[1], progress_bar=False, log=lambda s: None)
    assert report.ok and [r.name for r in report.results] == ["01_second"]
    assert (run / "second.txt").exists() and not (run / "first.json").exists()
    report = run_course("smoke", run, notebooks_dir=course, start_from=3, progress_bar=False, log=lambda s: None)
    assert report.ok and (run / "after.txt").exists()


def test_bad_override_fails_before_any_notebook_runs(course, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'stage1.rr'"):
        run_course("smoke", tmp_path / "run", notebooks_dir=course, overrides={"stage1.rr": 1})
    assert not (tmp_path / "run").exists()


def test_cli_exit_codes(course, tmp_path, capsys):
    base = ["run", "--notebooks-dir", str(course), "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(base + ["--only", "0", "--only", "1"]) == 0
    assert main(base) == 1
    assert main(base + ["--only", "9"]) == 2
    assert "error: no notebook numbered [9]" in capsys.readouterr().err


def test_cli_misspelled_key_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmed_helpers.cli",
            "run",
            "--profile",
            "smoke",
            "--set",
            "stage1.rr=8",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown key 'stage1.rr' in override of profile 'smoke' (did you mean 'stage1.r'?)"
    ]


def test_cli_show_and_profiles(capsys):
    assert main(["show", "full", "--set", "stage1.max_steps=5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stage1"]["max_steps"] == 5 and shown["stage1"]["r"] == 32
    assert main(["profiles"]) == 0
    assert {"smoke", "colab", "full"} <= set(capsys.readouterr().out.split())
