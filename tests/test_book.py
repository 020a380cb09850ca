"""The course as a book: built offline from the executed smoke run (Sphinx warnings are errors), then read in
headless Chromium like a visitor would."""

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from conftest import ROOT

from mmed_helpers.book import BookError, build_book, toc_notebooks

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MMED_TEST_ARTIFACTS", ROOT / "test-artifacts"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def book_html(smoke_course, tmp_path_factory):
    run, _ = smoke_course
    book = tmp_path_factory.mktemp("book") / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "notebooks"))
    return build_book(run, book_dir=book, output_dir=book)


def test_book_needs_an_executed_run(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "notebooks"))
    with pytest.raises(BookError, match="has no executed 00_setup.*run the course first"):
        build_book(tmp_path / "no-run", book_dir=book)


def test_book_has_every_chapter_and_notebook(book_html):
    pages = {p.relative_to(book_html).as_posix() for p in book_html.rglob("*.html")}
    for name in ("intro", "background", "gpu", "glossary", "references"):
        assert f"{name}.html" in pages
    for nb in toc_notebooks(ROOT / "book"):
        assert f"{nb}.html" in pages
    home = (book_html / "index.html").read_text(encoding="utf-8")  # the redirect page links the site's icon
    icon = re.search(r'rel="icon" href="([^"]+)"', home)
    assert icon and (book_html / icon.group(1)).is_file()
    refs = (book_html / "references.html").read_text(encoding="utf-8")
    assert "Towards democratizing multilingual" in refs and "weight-decomposed low-rank adaptation" in refs.lower()


def test_no_page_shows_the_building_machines_folders_or_the_injected_parameters(book_html, smoke_course):
    """The run folder, the checkout, the Python environment, the cache and the home folder of the machine that
    ran the course appear on no page (outputs print them); the cell papermill injected is gone, the notebook's
    own parameters cell is still there."""
    import sys

    from mmed_helpers.core.flags import cache_dir
    from mmed_helpers.core.layout import RunLayout

    run, _ = smoke_course
    folders = {str(RunLayout(run).root), str(ROOT), sys.prefix, str(cache_dir()), str(Path.home())} - {"/"}
    leaks = []
    for page in book_html.rglob("*.html"):
        if "_static" in page.parts:
            continue
        html = page.read_text(encoding="utf-8")
        leaks += [f"{page.relative_to(book_html)}: {f}" for f in folders if f in html]
    assert not leaks, leaks[:10]
    for nb in toc_notebooks(ROOT / "book"):
        html = (book_html / f"{nb}.html").read_text(encoding="utf-8")
        assert "# Parameters (papermill overrides these" in html, nb  # the learner's parameters cell
        assert "# Parameters</span>" not in html, nb  # papermill's injected one begins with just that


def test_exercise_answers_are_collapsed_toggles_with_their_markdown_rendered(book_html):
    """Each notebook page shows its exercises' worked answers in closed ``<details>`` toggles (the reader opens
    them), with the answer's Markdown rendered inside (paragraphs, tables, code), not shown as raw text."""
    for nb in toc_notebooks(ROOT / "book"):
        html = (book_html / f"{nb}.html").read_text(encoding="utf-8")
        toggles = re.findall(r"<details(?:\s[^>]*)?>(.*?)</details>", html, re.S)
        assert len(toggles) >= 2 and "<details open" not in html and "&lt;details" not in html, nb
        for body in toggles:
            assert body.lstrip().startswith("<summary>Answer</summary>") and "<p>" in body and "**" not in body, nb


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make test installs it)")
def test_every_page_loads_cleanly_in_chromium(book_html, server):
    from playwright.sync_api import sync_playwright

    pages = sorted(
        p.relative_to(book_html).as_posix()
        for p in book_html.rglob("*.html")
        if "_static" not in p.parts and "_sources" not in p.parts
    )
    problems: list[str] = []
    ids_cache: dict[str, set[str]] = {}

    def ids_of(rel: str) -> set[str]:
        if rel not in ids_cache:
            html = (book_html / rel).read_text(encoding="utf-8")
            ids_cache[rel] = set(re.findall(r'\bid="([^"]+)"', html))
        return ids_cache[rel]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        for rel in pages:
            errors.clear()
            response = page.goto(urljoin(server, rel), wait_until="load")
            assert response is not None and response.status == 200, rel
            page.wait_for_load_state("networkidle")
            redirected = page.url != urljoin(server, rel)  # what a redirect page had in flight is aborted, not failed
            problems += [f"{rel}: {e}" for e in errors if not (redirected and e.endswith("(net::ERR_ABORTED)"))]
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.naturalHeight])"
            )
            broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
            problems += [f"{rel}: image {src} did not load" for src in broken]
            if rel.startswith("notebooks/"):
                figures = [1 for src, _, w, h in images if w > 100 and h > 100]
                if not figures:
                    problems.append(f"{rel}: no figure shown")
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                url = urlparse(href)
                if not href.startswith(server):
                    continue
                target = url.path[len(urlparse(server).path) :] or "index.html"
                if target.endswith("/"):
                    target += "index.html"
                if not (book_html / target).is_file():
                    problems.append(f"{rel}: link to missing {target}")
                elif url.fragment and target.endswith(".html") and url.fragment not in ids_of(target):
                    problems.append(f"{rel}: link to missing anchor {target}#{url.fragment}")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.goto(urljoin(server, "index.html"), wait_until="networkidle")
        page.screenshot(path=str(ARTIFACTS / "book-home.png"), full_page=False)
        browser.close()
    assert not problems, "\n".join(problems[:40])
    assert (ARTIFACTS / "book-home.png").stat().st_size > 10_000
