import torch

from mmed_helpers.steps.setup import environment_report, report_rows, unsloth_status


def test_unsloth_status_matches_the_machine():
    status = unsloth_status()
    assert status.version == "2026.10.9", status
    assert status.mode == ("gpu" if torch.cuda.is_available() else "cpu-fallback")
    assert ("CPU fallback" in status.description) == (status.mode == "cpu-fallback")


def test_environment_report_rows():
    report = environment_report(check_unsloth=False)
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["torch"] == torch.__version__
    rows = dict(report_rows(report))
    assert rows["package transformers"] == "5.17.0"
    assert "unsloth mode" not in rows
