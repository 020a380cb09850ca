import hashlib
import json

from mmed_helpers.core.artifacts import file_sha256, package_versions, read_manifest, write_manifest
from mmed_helpers.core.flags import runtime_env
from mmed_helpers.core.notebook import start


def test_file_and_directory_hashes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello")
    assert file_sha256(f) == hashlib.sha256(b"hello").hexdigest()
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_bytes(b"1")
    h1 = file_sha256(d)
    (d / "sub" / "x").write_bytes(b"2")
    assert file_sha256(d) != h1


def test_manifest_records_inputs_versions_and_timings(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("data")
    path = write_manifest(
        tmp_path / "step",
        step="01_x",
        profile="smoke",
        parameters={"k": 1},
        seed=3,
        inputs={"src": src},
        outputs={"n": 2},
        timings={"wall": 1.23456},
    )
    m = json.loads(path.read_text())
    assert m == read_manifest(tmp_path / "step")
    assert m["step"] == "01_x" and m["seed"] == 3 and m["parameters"] == {"k": 1}
    assert m["inputs"]["src"]["sha256"] == file_sha256(src)
    assert m["timings_s"]["wall"] == 1.235
    assert m["packages"]["torch"] == package_versions(["torch"])["torch"] is not None


def test_package_versions_reports_missing_as_none():
    assert package_versions(["surely-not-installed-pkg"]) == {"surely-not-installed-pkg": None}


def test_notebook_start_sets_up_run(tmp_path, monkeypatch):
    for key in runtime_env(start("setup", "smoke", tmp_path).cfg):
        monkeypatch.delenv(key, raising=False)
    step = start("translate", profile="smoke", run_dir=tmp_path / "run", overrides={"seed": 5})
    assert step.out_dir == (tmp_path / "run" / "02_translate_ccts") and step.out_dir.is_dir()
    assert step.name == "02_translate_ccts" and step.run.root == step.run_dir == tmp_path / "run"
    assert step.cfg.seed == 5
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the smoke profile is offline
    m = json.loads(step.write_manifest(outputs={"rows": 3}).read_text())
    assert m["parameters"]["overrides"] == {"seed": 5}
    assert m["parameters"]["profile"]["stage1"]["r"] == 32 and m["outputs"] == {"rows": 3}


def test_atomic_directory_swaps_in_whole_or_not_at_all(tmp_path):
    import pytest

    from mmed_helpers.core.artifacts import atomic_directory

    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("killed half-way")
    assert (target / "a.txt").read_text() == "one"  # the old directory survives a failed rewrite
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left behind
