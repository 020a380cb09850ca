"""The whole course on the smoke profile, run as a user would: through the console command."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import ROOT

from mmed_helpers.runner import discover_notebooks


@pytest.mark.e2e
def test_smoke_course_runs_end_to_end(tmp_path):
    run = tmp_path / "run"
    cli = Path(sys.executable).with_name("mmed-course")
    proc = subprocess.run(
        [str(cli), "run", "--profile", "smoke", "--run-dir", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    notebooks = discover_notebooks(ROOT / "notebooks")
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["ok"] and [r["name"] for r in summary["results"]] == [p.stem for p in notebooks]
    for p in notebooks:
        assert f"{p.stem}  ok" in proc.stdout
        executed = nbformat.read(run / "notebooks" / p.name, as_version=4)
        assert all(c.execution_count for c in executed.cells if c.cell_type == "code" and c.source.strip())

    # 00_setup: the base model, its record and the manifest
    base = json.loads((run / "base_model.json").read_text())
    assert base["source"] == "tiny" and (Path(base["path"]) / "model.safetensors").is_file()
    manifest = json.loads((run / "00_setup" / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["inputs"]["base_model"]["sha256"]
    assert manifest["outputs"]["model"]["architecture"] == "LlamaForCausalLM"
    assert {r["lang"] for r in manifest["outputs"]["tokenizer_fertility"]} == {"en", "zh", "ja", "fr", "ru", "es"}
    assert (run / "00_setup" / "tokenizer_fertility.png").stat().st_size > 5000
    setup = nbformat.read(run / "notebooks" / "00_setup.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") for c in setup.cells for o in c.get("outputs", []))
    expected = "CUDA GPU fast path" if torch.cuda.is_available() else "no GPU found, CPU fallback"
    assert expected in text
