"""The install files agree with each other, and the environment they build is the intended one."""

import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==(.+)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines):
    out = {}
    for line in lines:
        m = PIN.match(line.strip())
        if m:
            out[_norm(m.group(1))] = (m.group(2) or "", m.group(3))
    return out


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_dependency_is_pinned(pyproject):
    deps = pyproject["project"]["dependencies"] + [
        d for extra in pyproject["project"]["optional-dependencies"].values() for d in extra
    ]
    unpinned = [d for d in deps if not PIN.match(d)]
    assert not unpinned


def test_torch_and_unsloth_caps(pyproject):
    pins = _pins(pyproject["project"]["dependencies"])
    assert pins["torch"][1] == "2.13.0"
    assert tuple(int(x) for x in pins["transformers"][1].split(".")) <= (5, 17, 0)
    assert tuple(int(x) for x in pins["trl"][1].split(".")) <= (1, 15, 0)
    assert int(pins["datasets"][1].split(".")[0]) < 5
    assert pins["bitsandbytes"][1] == "0.50.2"
    assert "unsloth" not in pins  # installed apart: see requirements/unsloth-cpu.txt


def test_environment_yml_matches_pyproject(pyproject):
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert pyproject["project"]["requires-python"] == ">=" + python.split("=")[1]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    env_pins = _pins(pip_section)
    assert env_pins, "environment.yml pins nothing"
    project_pins = _pins(pyproject["project"]["dependencies"])
    for name, pin in env_pins.items():
        assert project_pins.get(name) == pin, f"{name}: environment.yml {pin} vs pyproject {project_pins.get(name)}"
    assert any(d.startswith("-e .") for d in pip_section), "environment.yml must install the course package"
    assert pip_section[0] == "torch==2.13.0"


def test_unsloth_cpu_requirements_match_gpu_extra(pyproject):
    lines = (ROOT / "requirements" / "unsloth-cpu.txt").read_text().splitlines()
    cpu = _pins(ln for ln in lines if not ln.startswith("#"))
    gpu = _pins(pyproject["project"]["optional-dependencies"]["gpu"])
    assert cpu == gpu == {"unsloth": ("", "2026.10.9"), "unsloth-zoo": ("", "2026.10.9")}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make course" in readme
    assert [ln for ln in ci.splitlines() if ln and not ln.startswith("#") and "set -" not in ln][-1] == "make test"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine installs the CUDA build")
def test_installed_torch_is_the_cpu_build():
    import torch

    assert torch.version.cuda is None and torch.__version__.startswith("2.13.0")
    out = subprocess.run([sys.executable, "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    cuda_packages = re.findall(r"^(nvidia-\S+|xformers|triton)\s", out, flags=re.M)
    assert not cuda_packages
