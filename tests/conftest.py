"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

import atexit
import os
import shutil
import tempfile

from mmed_helpers.core.flags import CACHE_DIR, OFFLINE_ENV, QUIET_ENV  # cheap: imports no Hugging Face library

os.environ.update({**OFFLINE_ENV, **QUIET_ENV})
if CACHE_DIR not in os.environ:  # the pre-trained tiny model is built once per test session, not shared
    os.environ[CACHE_DIR] = tempfile.mkdtemp(prefix="mmed-test-cache-")
    atexit.register(shutil.rmtree, os.environ[CACHE_DIR], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from mmed_helpers.core.config import TinyModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The embedded smoke model, built once per test session (read-only for tests)."""
    from mmed_helpers.core.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TinyModelConfig())


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path) -> Path:
    """A private copy of the tiny model a test may modify."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_dir, dst)
    return dst


@pytest.fixture(scope="session")
def smoke_course(tmp_path_factory):
    """The whole course on the smoke profile, run once per session through the console command, as a user
    would run it. Returns ``(run_dir, completed_process)``; tests that change the run work on a copy."""
    import subprocess
    import sys

    run = tmp_path_factory.mktemp("course") / "run"
    cli = Path(sys.executable).with_name("mmed-course")
    proc = subprocess.run(
        [str(cli), "run", "--profile", "smoke", "--run-dir", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return run, proc
