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

    >>> with atomic_directory("/tmp/model") as tmp:
    ...     (tmp / "config.json").write_text("{}")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
) -> Path:
    """Write ``out_dir/manifest.json`` describing how the artifacts in ``out_dir`` were made.

    ``inputs`` maps a name to a file or directory; each is recorded with its absolute path and SHA-256.
    """
    record = {
        "step": step,
        "profile": profile,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "parameters": dict(parameters or {}),
        "inputs": {
            name: {"path": str(Path(p).resolve()), "sha256": file_sha256(p)} for name, p in (inputs or {}).items()
        },
        "outputs": dict(outputs or {}),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    return atomic_write_text(Path(out_dir) / "manifest.json", json.dumps(record, indent=2, default=str) + "\n")


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read ``out_dir/manifest.json`` (FileNotFoundError names the folder)."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest in {Path(out_dir)}: the step that writes it has not run")
    return json.loads(path.read_text(encoding="utf-8"))
