import pytest
import torch

from mmed_helpers.steps.setup import environment_report, report_rows, unsloth_status


def test_unsloth_status_matches_the_machine(monkeypatch):
    monkeypatch.delenv("MMED_DISABLE_UNSLOTH", raising=False)
    monkeypatch.delenv("MMED_TRAIN_BACKEND", raising=False)
    status = unsloth_status()
    assert status.version == "2026.10.9", status
    assert status.mode == ("gpu" if torch.cuda.is_available() else "not-used")
    assert ("no CUDA GPU" in status.description) == (status.mode == "not-used")
    monkeypatch.setenv("MMED_TRAIN_BACKEND", "unsloth")  # forced: imported in the probe, on the CPU fallback
    forced = unsloth_status()
    assert (forced.mode, forced.version) == ("gpu" if torch.cuda.is_available() else "cpu-fallback", "2026.10.9")
    monkeypatch.setenv("MMED_TRAIN_BACKEND", "peft")
    assert unsloth_status().mode == "not-used" and "MMED_TRAIN_BACKEND=peft" in unsloth_status().description
    monkeypatch.setenv("MMED_TRAIN_BACKEND", "unslot")
    with pytest.raises(ValueError, match="MMED_TRAIN_BACKEND must be one of auto, unsloth, peft, got 'unslot'"):
        unsloth_status()


def test_environment_report_rows():
    report = environment_report(check_unsloth=False)
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["torch"] == torch.__version__
    rows = dict(report_rows(report))
    assert rows["package transformers"] == "5.17.0"
    assert "unsloth mode" not in rows
