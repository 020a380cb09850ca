"""Build the course's Jupyter Book (v1, offline) from the executed notebooks of a course run.

The book's chapters live in ``book/``; its notebook pages are the executed copies that ``mmed-course run``
saved in ``<run_dir>/notebooks/``, copied into ``book/notebooks/`` at build time (never committed). Sphinx
warnings fail the build::

    >>> html = build_book("runs/smoke")          # -> book/_build/html
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from .core.flags import cache_dir
from .core.hosted import COLAB_BADGE_IMAGE
from .core.layout import RunLayout, project_root


class BookError(RuntimeError):
    """The book cannot be built (missing run, missing notebook, Sphinx errors); the message says why."""


def toc_notebooks(book_dir: Path) -> list[str]:
    """The ``notebooks/NN_name`` entries of the book's table of contents."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8"))
    files = [ch["file"] for part in toc.get("parts", []) for ch in part.get("chapters", [])]
    return [f for f in files if f.startswith("notebooks/")]


def build_book(
    run_dir: str | Path,
    book_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    strict: bool = True,
) -> Path:
    """Copy the run's executed notebooks into the book and build HTML; returns the ``html`` folder."""
    book = Path(book_dir) if book_dir else project_root() / "book"
    run_nb = RunLayout(run_dir).executed_notebooks
    if not (book / "_toc.yml").is_file():
        raise BookError(f"no book sources in {book} (expected _config.yml and _toc.yml)")
    wanted = toc_notebooks(book)
    missing = [f for f in wanted if not (run_nb / f"{Path(f).name}.ipynb").is_file()]
    if missing:
        raise BookError(
            f"the run in {Path(run_dir)} has no executed {', '.join(Path(m).name for m in missing)}: "
            "run the course first (make course, or mmed-course run)"
        )
    dest = book / "notebooks"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    scrub = machine_paths(run_dir)
    for f in wanted:
        copy_for_book(run_nb / f"{Path(f).name}.ipynb", dest / f"{Path(f).name}.ipynb", scrub)
    vendor_mathjax(book)
    out = Path(output_dir) if output_dir else book
    if (out / "_build").exists():
        shutil.rmtree(out / "_build")
    runner = "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; main()"
    cmd = [sys.executable, "-c", runner, "build", str(book), "--path-output", str(out), "--keep-going"]
    if strict:
        cmd.append("-W")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    html = out / "_build" / "html"
    if proc.returncode != 0 or not (html / "index.html").is_file():
        log = (proc.stdout + proc.stderr).strip().splitlines()
        problems = [ln for ln in log if "WARNING" in ln or "ERROR" in ln or "Error" in ln][:20] or log[-20:]
        raise BookError("jupyter-book build failed:\n" + "\n".join(problems))
    for page in html.rglob("*.html"):
        dedupe_inline_scripts(page)
    config = yaml.safe_load((book / "_config.yml").read_text(encoding="utf-8")) or {}
    favicon = (config.get("html") or {}).get("favicon")
    if favicon:
        add_icon_to_redirect(html / "index.html", f"_static/{Path(favicon).name}")
    return html


def add_icon_to_redirect(page: Path, icon: str) -> None:
    """Jupyter Book's ``index.html`` is a bare redirect without the site's icon link, so a browser asks for
    ``/favicon.ico`` and logs a 404 on a first visit; give it the icon (``html.favicon``) the other pages use."""
    text = page.read_text(encoding="utf-8")
    if "http-equiv" in text and 'rel="icon"' not in text and (page.parent / icon).is_file():
        page.write_text(f'<link rel="icon" href="{icon}"/>\n' + text, encoding="utf-8")


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
LOCAL_BADGE = "../_static/colab-badge.svg"
"""The badge image as a notebook page of the book finds it (``book/_static/colab-badge.svg``)."""
MATHJAX_VERSION = "3.2.2"


def copy_for_book(src: Path, dest: Path, machine_paths: dict[str, str] | None = None) -> None:
    """Copy an executed notebook for the book: without the cell papermill injected (the run's own parameters,
    with this machine's run path; a reader sees the notebook's parameters cell), without interactive widget
    state (tqdm progress bars: a static page shows their text form, and the widget manager would otherwise be
    fetched from a CDN), with the Colab badge's image taken from the book's own ``_static`` (the link still opens
    Colab), and with every ``machine_paths`` prefix in its text replaced (:func:`machine_paths`)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    nb.get("metadata", {}).pop("papermill", None)
    nb["cells"] = [c for c in nb.get("cells", []) if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        for out in cell.get("outputs", []):
            data = out.get("data")
            if isinstance(data, dict) and WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                data.setdefault("text/plain", "")
    text = json.dumps(nb, ensure_ascii=False)
    text = text.replace(COLAB_BADGE_IMAGE, LOCAL_BADGE)  # the book works offline: its own copy of the badge
    for prefix, shown in sorted((machine_paths or {}).items(), key=lambda kv: -len(kv[0])):
        escaped = re.escape(json.dumps(prefix)[1:-1])  # the path as it appears inside JSON strings
        text = re.sub(escaped + r"(?![\w.-])", shown.replace("\\", "\\\\"), text)  # whole path parts only
    dest.write_text(text, encoding="utf-8")


def machine_paths(run_dir: str | Path) -> dict[str, str]:
    """The folders of the building machine that executed notebooks print, and what the book shows instead:
    the run folder as ``runs/<name>``, the course checkout as ``.``, the Python environment as ``<python>``,
    the course's cache (``MMED_CACHE_DIR``) as ``<cache>`` and the home folder as ``~``. Longer prefixes are
    replaced first, so a path keeps its most specific form."""
    run = RunLayout(run_dir).root
    paths = {str(run): f"runs/{run.name}", str(project_root()): ".", sys.prefix: "<python>"}
    paths[str(cache_dir())] = "<cache>"
    home = str(Path.home())
    if home not in ("/", ""):
        paths[home] = "~"
    for key in list(paths):  # symlinked folders print their resolved form too
        paths.setdefault(os.path.realpath(key), paths[key])
    return paths


def vendor_mathjax(book: Path) -> Path:
    """MathJax in the book's ``_vendor`` (copied to the site root), so formulas render offline. Fetched once
    with npm from the npm registry into ``~/.cache/mmed-course`` and copied from there."""
    target = book / "_vendor" / "mathjax"
    if (target / "tex-mml-chtml.js").is_file():
        return target
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmed-course" / f"mathjax-{MATHJAX_VERSION}"
    )
    if not (cache / "tex-mml-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise BookError("the offline book needs MathJax, fetched with npm: install Node.js (npm) and rebuild")
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [npm, "install", "--prefix", tmp, "--no-audit", "--no-fund", "--silent", f"mathjax@{MATHJAX_VERSION}"],
                capture_output=True,
                text=True,
            )
            es5 = Path(tmp) / "node_modules" / "mathjax" / "es5"
            if proc.returncode != 0 or not (es5 / "tex-mml-chtml.js").is_file():
                raise BookError(f"npm could not install mathjax@{MATHJAX_VERSION}: {proc.stderr.strip()[-300:]}")
            if cache.exists():
                shutil.rmtree(cache)
            shutil.copytree(es5, cache)
    shutil.copytree(cache, target, dirs_exist_ok=True)
    return target


_INLINE_SCRIPT = re.compile(r"^\s*<script>.*</script>\s*$")


def dedupe_inline_scripts(page: Path) -> None:
    """Drop repeated one-line inline ``<script>`` tags from a built page.

    sphinx-thebe 0.3.1 registers its configuration script once per read of the Sphinx environment, and Jupyter
    Book 1 reads it twice, so each page declared ``const THEBE_JS_URL`` twice and the browser raised an error
    on every page. The copies are identical lines; the first is kept.
    """
    lines = page.read_text(encoding="utf-8").split("\n")
    seen: set[str] = set()
    kept = []
    for line in lines:
        if _INLINE_SCRIPT.match(line):
            if line.strip() in seen:
                continue
            seen.add(line.strip())
        kept.append(line)
    if len(kept) != len(lines):
        page.write_text("\n".join(kept), encoding="utf-8")
