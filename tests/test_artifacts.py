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


def test_a_rerun_that_says_the_same_keeps_the_manifest_and_any_change_rewrites_it(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("data")
    kw = dict(step="01_x", profile="smoke", parameters={"k": 1}, inputs={"src": src}, outputs={"n": 2})
    path = write_manifest(tmp_path / "step", timings={"wall": 5.0}, **kw)
    first = path.read_bytes()
    write_manifest(tmp_path / "step", timings={"wall": 0.1}, this_run={"generated_now": 0}, **kw)  # a rerun
    assert path.read_bytes() == first  # that took less time and generated nothing: the first record stays
    for change in ({"outputs": {"n": 3}}, {"parameters": {"k": 2}}, {"seed": 7}):
        write_manifest(tmp_path / "step", timings={"wall": 0.1}, **{**kw, **change})
        assert path.read_bytes() != first, change
        assert json.loads(path.read_text())["timings_s"]["wall"] == 0.1
        write_manifest(tmp_path / "step", timings={"wall": 5.0}, **kw)
        first = path.read_bytes()
    src.write_text("other data")  # an input changed: recorded anew
    write_manifest(tmp_path / "step", timings={"wall": 5.0}, **kw)
    assert json.loads(path.read_text())["inputs"]["src"]["sha256"] == file_sha256(src)
    path.write_text("{cut")  # a damaged manifest is replaced
    write_manifest(tmp_path / "step", timings={"wall": 5.0}, **kw)
    assert read_manifest(tmp_path / "step")["outputs"] == {"n": 2}


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


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path, monkeypatch):
    """A planted kill after the old directory is moved aside and before the new one is in place (the window
    where the old code had deleted the old one): the old one comes back on the next write, or on recovery."""
    from pathlib import Path

    import pytest

    from mmed_helpers.core.artifacts import atomic_directory, recover_directory

    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    real_rename = Path.rename

    def killed_after_first(self, dest):
        if Path(dest) == target:
            raise KeyboardInterrupt("killed between the renames")
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", killed_after_first)
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("two")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not target.exists() and (tmp_path / ".model.old" / "a.txt").read_text() == "one"
    assert recover_directory(target) == "restored" and (target / "a.txt").read_text() == "one"
    assert recover_directory(target) is None

    (tmp_path / ".model.new-x").mkdir()  # an unfinished build from a kill, and an old copy left after the swap
    (tmp_path / ".model.old").mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("three")
    assert (target / "a.txt").read_text() == "three"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_model_identity_tells_models_apart_without_reading_the_weights(tmp_path):
    """A model directory as transformers saves it: the identity follows the config, the tokenizer, the
    safetensors header and a rewrite of the weights (size or modification time), and the manifest records a
    model directory by it (an 8B model is not read byte by byte on every manifest)."""
    import os

    from mmed_helpers.core.artifacts import input_record, model_identity

    model = tmp_path / "model"
    model.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    weights = model / "model.safetensors"
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    (model / "config.json").write_text('{"model_type": "llama"}')
    first = model_identity(model)
    assert model_identity(model) == first
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    assert model_identity(model) != first
    before = model_identity(model)
    st = weights.stat()
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes([1]) * 16)  # retrained in place
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_identity(model) != before
    rec = input_record(model)
    assert set(rec) == {"path", "identity"} and rec["identity"] == model_identity(model)
    assert set(input_record(weights)) == {"path", "sha256"}  # a single file: its bytes
