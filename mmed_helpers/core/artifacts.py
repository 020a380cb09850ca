"""Run directories and manifests.

A run lives in one folder (``runs/<profile>/`` by default). Each notebook writes its artifacts into its own
subfolder with a ``manifest.json`` beside them: profile, parameters, seed, input hashes, package versions and
timings, so every artifact says how it was made::

    >>> from mmed_helpers.core.artifacts import write_manifest
    >>> write_manifest("/tmp/run/00_setup", step="00_setup", profile="smoke", parameters={"seed": 42})
    PosixPath('/tmp/run/00_setup/manifest.json')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "mmed-course",
    "torch",
    "transformers",
    "tokenizers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "unsloth",
    "unsloth_zoo",
    "sacrebleu",
    "bert-score",
    "papermill",
)


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, ``None`` where it is not installed (no imports are made)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of every file under a directory (names and bytes, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_identity(path: str | Path, small: int = 4 * 2**20) -> str:
    """A cheap identity of a model directory: SHA-256 over every file's name, size and modification time, the
    bytes of the small files (config, tokenizer: up to ``small`` bytes) and each safetensors header (tensor names,
    shapes, offsets). Weights rewritten in place change the modification time, so this tells two models apart
    without reading gigabytes of weights (:func:`file_sha256` reads every byte)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(x for x in root.rglob("*") if x.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        if st.st_size <= small:
            h.update(f.read_bytes())
        elif f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, 100 * 2**20)))
    return h.hexdigest()


def is_model_dir(path: str | Path) -> bool:
    """A Hugging Face model directory: ``config.json`` and safetensors weights."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def input_record(path: str | Path) -> dict[str, str]:
    """How a manifest names one input: its absolute path and SHA-256, or for a model directory its
    :func:`model_identity` (an 8B model's 16 GB are not read on every manifest)."""
    p = Path(path)
    if is_model_dir(p):
        return {"path": str(p.resolve()), "identity": model_identity(p)}
    return {"path": str(p.resolve()), "sha256": file_sha256(p)}


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in at the end: readers see the old directory or
    the complete new one, never half of it, and an exception (or a kill) leaves no partial ``path``.

    The swap is two renames: the old directory to ``.<name>.old``, then the new one into place; the old one is
    deleted only after that. A kill between the renames leaves ``.<name>.old`` complete, and the next
    :func:`atomic_directory` (or :func:`recover_directory`) on the same path puts it back first; unfinished
    ``.<name>.new-*`` folders from a kill are removed.

    >>> with atomic_directory("/tmp/model") as tmp:
    ...     (tmp / "config.json").write_text("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    old = _old_copy(target)
    try:
        yield tmp
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _old_copy(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def recover_directory(path: str | Path) -> str | None:
    """Repair what a kill inside :func:`atomic_directory` left at ``path``: the previous directory is put back
    if the swap stopped between its two renames, a leftover old copy is deleted once the new one is in place,
    and unfinished ``.<name>.new-*`` folders are removed. Returns what was done (``restored``, ``cleaned``) or
    None when there was nothing to do."""
    target = Path(path)
    old = _old_copy(target)
    done = None
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old)
            done = "cleaned"
        else:
            old.rename(target)
            done = "restored"
    if target.parent.is_dir():
        for leftover in target.parent.glob(f".{target.name}.new-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            done = done or "cleaned"
    return done


def write_manifest(
    out_dir: str | Path,
    *,
    step: str,
    profile: str,
    parameters: Mapping[str, Any] | None = None,
    seed: int | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    outputs: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    this_run: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/manifest.json`` describing how the artifacts in ``out_dir`` were made.

    ``inputs`` maps a name to a file or directory; each is recorded by :func:`input_record` (path and SHA-256,
    or a model directory's cheap identity). When the folder already holds a manifest that says the same (all but
    the time it was written, the timings and ``this_run``, :data:`RERUN_FIELDS`), it is kept as it is: a rerun
    that reproduced the step's artifacts changes nothing in the run, its record included. ``this_run`` holds what
    only the invocation that wrote the manifest did (outputs generated now, a stage reused), not facts of the
    artifacts.
    """
    record = {
        "step": step,
        "profile": profile,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "parameters": dict(parameters or {}),
        "inputs": {name: input_record(p) for name, p in (inputs or {}).items()},
        "outputs": dict(outputs or {}),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
        "this_run": dict(this_run or {}),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    path = Path(out_dir) / "manifest.json"
    text = json.dumps(record, indent=2, default=str) + "\n"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if isinstance(old, dict) and _without(old, RERUN_FIELDS) == _without(json.loads(text), RERUN_FIELDS):
            return path
    return atomic_write_text(path, text)


RERUN_FIELDS = ("created", "timings_s", "this_run")
"""Manifest fields that differ between a run and a rerun that reproduced it exactly."""


def _without(record: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read ``out_dir/manifest.json`` (FileNotFoundError names the folder)."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest in {Path(out_dir)}: the step that writes it has not run")
    return json.loads(path.read_text(encoding="utf-8"))
