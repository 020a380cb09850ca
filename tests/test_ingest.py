"""Your own corpus: a folder of real files (hard-wrapped text, Markdown, JSON Lines, Parquet, a PDF), a dataset in
the Hub's layout streamed, cut to the generator's real tokenizer, language-checked, deduplicated and sampled."""

import json
import shutil
import subprocess
import sys
import textwrap
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from mmed_helpers.core.config import load_profile
from mmed_helpers.core.corpus import CorpusError, load_corpus
from mmed_helpers.core.ingest import (
    Document,
    chunk,
    ingest,
    load_passages,
    paragraphs,
    read_dataset_documents,
    read_file_documents,
    tokenizer_counter,
)

GERMAN = (
    "Der Bluthochdruck ist ein wichtiger Risikofaktor für Schlaganfall, Herzinfarkt und Nierenversagen. Eine "
    "dauerhafte Senkung des Blutdrucks durch Lebensstiländerungen und Medikamente verringert dieses Risiko "
    "deutlich, und die meisten Patienten brauchen dafür mehr als ein Medikament."
)


def write_pdf(path: Path, pages: list[list[str]]) -> None:
    """A real PDF 1.4 file (catalogue, page tree, Helvetica, one text stream per page, a correct xref table):
    the kind a word processor exports, read back by pypdf as a user's file would be."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        None,  # the page tree, once the pages are numbered
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    kids = []
    for lines in pages:
        ops = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({esc(x)}) Tj T*" for x in lines) + " ET"
        page_no, content_no = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_no} 0 R")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        objects.append(ops.encode("latin-1"))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        if isinstance(obj, bytes):
            out += f"{i} 0 obj\n<< /Length {len(obj)} >>\nstream\n".encode() + obj + b"\nendstream\nendobj\n"
        else:
            out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


@pytest.fixture(scope="module")
def bundled():
    return {lang: load_corpus([lang]) for lang in ("en", "fr", "zh", "ja")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, bundled):
    """The bundled passages laid out as a user's corpus folder, in every supported format, plus a German text,
    an exact and a near copy, and a file of another type."""
    root = tmp_path_factory.mktemp("corpus")
    en = bundled["en"]
    (root / "notes").mkdir()
    for p in en[:3]:  # hard-wrapped at 72 columns, as text files usually are
        wrapped = "\n\n".join(textwrap.fill(para, 72) for para in p.paragraphs)
        (root / "notes" / f"{p.id}.txt").write_text(wrapped + "\n", encoding="utf-8")
    md = en[3]
    (root / "guides").mkdir()
    (root / "guides" / "chapter.md").write_text(
        "---\nauthor: course\n---\n"
        f"# {md.title}\n\n"
        + "\n\n".join(md.paragraphs[:1])
        + "\n\nSee [the guideline](https://example.org/guide) and **act early**.\n\n"
        + "```python\nprint('code is not prose')\n```\n\n"
        + "\n\n".join(md.paragraphs[1:])
        + "\n",
        encoding="utf-8",
    )
    with open(root / "rows.jsonl", "w", encoding="utf-8") as fh:
        for p in bundled["fr"][:3]:
            fh.write(json.dumps({"doc": p.id, "body": p.text, "language": "fr"}, ensure_ascii=False) + "\n")
    asia = bundled["zh"][:3] + bundled["ja"][:2]
    pq.write_table(
        pa.table({"body": [p.text for p in asia], "doc": ["z1", "z2", "z3", "j1", "j2"]}), root / "asia.parquet"
    )
    write_pdf(root / "leaflet.pdf", [textwrap.wrap(para, 90) for para in _pdf_passage(en).paragraphs[:2]])
    (root / "german.txt").write_text(GERMAN + "\n", encoding="utf-8")
    shutil.copy(root / "notes" / f"{en[0].id}.txt", root / "notes" / "x-copy.txt")  # sorts after its original
    near = en[1].text.replace(" the ", " a ", 1)
    (root / "notes" / "near.txt").write_text(near + "\n", encoding="utf-8")
    (root / "figure.png").write_bytes(zlib.compress(b"not text"))
    return root


CFG = load_profile("smoke", {"languages": ["en", "zh", "ja", "fr"]})


def doc_of(p) -> str:
    """The document a passage was cut from (its id without ``#<number>~<hash>``)."""
    return p.id.split("~")[0].rsplit("#", 1)[0]


def number_of(p) -> int:
    head = p.id.split("~")[0]
    return int(head.rsplit("#", 1)[1]) if "#" in head else 0


def _pdf_passage(en):
    """A bundled English passage (after the four used as text files) that Helvetica's encoding can set."""
    return next(p for p in en[4:] if all(para.isascii() for para in p.paragraphs[:2]))


def _docs(folder):
    return read_file_documents(folder, text_column="body", id_column="doc", language_column="language")


def test_every_file_type_is_read_with_a_stable_id_and_its_source(folder, bundled):
    skipped = Counter()
    docs = {d.id: d for d in read_file_documents(folder, "body", "doc", "language", skipped=skipped)}
    en, fr = bundled["en"], bundled["fr"]
    assert (
        sorted(docs)
        == sorted(
            ["z1", "z2", "z3", "j1", "j2", "german.txt", "guides/chapter.md", "leaflet.pdf"]
            + [p.id for p in fr[:3]]  # the jsonl's id column
            + [f"notes/{p.id}.txt" for p in en[:3]]
            + ["notes/x-copy.txt", "notes/near.txt"]
        )
    )
    assert skipped["other_file_type"] == 1  # figure.png
    assert docs[fr[0].id].source == "rows.jsonl@0" and docs[fr[0].id].lang == "fr"
    assert docs["z2"].source == "asia.parquet@1"
    # hard-wrapped text comes back as its paragraphs
    assert paragraphs(docs[f"notes/{en[0].id}.txt"].text) == en[0].paragraphs
    # Markdown: the heading is a paragraph and the title; link targets, emphasis, code and front matter are gone
    md = docs["guides/chapter.md"]
    assert md.title == en[3].title and paragraphs(md.text)[0] == en[3].title
    assert "See the guideline and act early." in md.text
    assert not any(s in md.text for s in ("https://", "**", "print(", "author:"))
    # the PDF's text, page by page, through pypdf
    pdf_text = " ".join(paragraphs(docs["leaflet.pdf"].text))
    assert " ".join(_pdf_passage(en).paragraphs[:2]).split() == pdf_text.split()


def test_ingest_checks_language_and_duplicates_and_accounts_for_every_passage(folder, bundled):
    passages, report = ingest(_docs(folder), CFG.languages, max_tokens=4096, min_tokens=10)
    by_id = {doc_of(p): p for p in passages}
    assert report.skipped["other_language"] == 1  # german.txt
    assert report.skipped["exact_duplicate"] == 1  # notes/x-copy.txt
    assert report.skipped["near_duplicate"] == 1  # notes/near.txt: one word changed
    assert "notes/x-copy.txt" not in by_id and "notes/near.txt" not in by_id
    assert report.passages == sum(report.kept.values()) + sum(
        v for k, v in report.skipped.items() if k not in ("other_file_type", "empty_document")
    )
    langs = {doc_of(p): p.lang for p in passages}
    assert [langs[k] for k in ("z1", "z2", "z3", "j1", "j2")] == ["zh", "zh", "zh", "ja", "ja"]  # detected
    assert {langs[p.id] for p in bundled["fr"][:3]} == {"fr"}  # from the language column
    assert dict(report.kept) == {"en": 5, "zh": 3, "ja": 2, "fr": 3}
    assert by_id[f"notes/{bundled['en'][0].id}.txt"].source == f"notes/{bundled['en'][0].id}.txt"


def test_passages_fit_the_generators_real_tokenizer_and_end_on_paragraphs(folder, tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    count = tokenizer_counter(tok)
    docs = list(_docs(folder))
    passages, report = ingest(docs, CFG.languages, max_tokens=120, min_tokens=1, count=count)
    assert all(count(p.text) <= 120 for p in passages), max(count(p.text) for p in passages)
    source = {d.id: d for d in docs}
    for p in passages:
        doc_paragraphs = paragraphs(source[doc_of(p)].text)
        for piece in p.text.split("\n\n"):  # a whole paragraph, or part of one longer than the budget
            assert piece in doc_paragraphs or any(piece in q and count(q) > 120 for q in doc_paragraphs), piece
    assert report.passages > len(docs)  # documents were cut
    # nothing is lost: a document's passages, in order, hold all its words
    doc = f"notes/{load_corpus(['en'])[0].id}.txt"
    mine = sorted((p for p in passages if doc_of(p) == doc), key=number_of)
    assert len(mine) > 1 and " ".join(p.text for p in mine).split() == source[doc].text.split()
    # the same documents with a bigger budget: fewer, longer passages
    fewer, _ = ingest(docs, CFG.languages, max_tokens=400, min_tokens=1, count=count)
    assert len(fewer) < len(passages)


def test_a_passage_whose_text_changed_is_a_new_passage():
    """Outputs are stored under passage ids: an edited document must not reuse what was generated from its old
    text, and an unchanged one must."""
    text = load_corpus(["en"])[0].text
    first, _ = ingest([Document("notes/a.txt", text, "notes/a.txt")], ["en"], max_tokens=80)
    same, _ = ingest([Document("notes/a.txt", text, "notes/a.txt")], ["en"], max_tokens=80)
    edited = text.replace(" the ", " a ", 1)
    changed, _ = ingest([Document("notes/a.txt", edited, "notes/a.txt")], ["en"], max_tokens=80)
    assert [p.id for p in first] == [p.id for p in same] and len(first) > 1
    moved = [a.id != b.id for a, b in zip(first, changed, strict=True)]
    assert moved == [a.text != b.text for a, b in zip(first, changed, strict=True)] and any(moved) and not all(moved)


def test_chunk_overlap_and_oversize_pieces():
    text = "Alpha beta gamma.\n\nDelta epsilon.\n\nZeta eta theta iota."
    assert chunk(text, budget=6) == ["Alpha beta gamma.\n\nDelta epsilon.", "Zeta eta theta iota."]
    assert chunk(text, budget=6, overlap=1) == [
        "Alpha beta gamma.\n\nDelta epsilon.",
        "Delta epsilon.\n\nZeta eta theta iota.",
    ]
    long = " ".join(f"word{i}" for i in range(25)) + "."
    pieces = chunk(long, budget=10)
    assert len(pieces) == 3 and " ".join(pieces) == long
    assert chunk("肝硬化是慢性肝病的终末阶段。门静脉高压导致腹水和静脉曲张。", budget=16) == [
        "肝硬化是慢性肝病的终末阶段。",
        "门静脉高压导致腹水和静脉曲张。",
    ]


def test_the_sample_is_seeded_and_does_not_depend_on_file_order(folder):
    """Which passages are drawn depends on the seed and the passages, not on the order of the files (of two
    duplicates, though, the one read first is kept)."""
    docs = [d for d in _docs(folder) if d.id not in ("notes/x-copy.txt", "notes/near.txt")]
    run = dict(max_tokens=60, min_tokens=5, per_language=3)
    first, report = ingest(docs, CFG.languages, seed=1, **run)
    again, _ = ingest(list(reversed(docs)), CFG.languages, seed=1, **run)
    other, _ = ingest(docs, CFG.languages, seed=2, **run)
    ids = sorted(p.id for p in first)
    assert ids == sorted(p.id for p in again) and ids != sorted(p.id for p in other)
    assert Counter(p.lang for p in first) == {"en": 3, "zh": 3, "ja": 3, "fr": 3}
    assert report.skipped["over_quota"] > 0
    assert report.passages == sum(report.kept.values()) + sum(
        v for k, v in report.skipped.items() if k not in ("other_file_type", "empty_document")
    )


def test_a_dataset_in_the_hubs_layout_is_streamed(tmp_path, bundled):
    """A folder as the Hub serves a dataset (``data/<split>-00000-of-00001.parquet``, a card), opened with
    ``datasets.load_dataset(..., streaming=True)``: the same documents as the rows, and the same passages as
    the same text given as files."""
    ds = tmp_path / "my-medical-texts"
    (ds / "data").mkdir(parents=True)
    rows = [{"pmid": f"p{i}", "abstract": p.text} for i, p in enumerate(bundled["en"][:4])]
    pq.write_table(pa.Table.from_pylist(rows), ds / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), ds / "data" / "test-00000-of-00001.parquet")
    (ds / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# My medical texts\n", encoding="utf-8")
    docs = list(read_dataset_documents(str(ds), split="train", text_column="abstract", id_column="pmid"))
    assert [(d.id, d.text, d.source) for d in docs] == [
        (r["pmid"], r["abstract"], f"my-medical-texts/train@{i}") for i, r in enumerate(rows)
    ]
    settings = {"languages": ["en"], "datagen.passages_per_language": 0}
    cfg = load_profile(
        "smoke",
        {
            **settings,
            "datagen.corpus.dataset": str(ds),
            "datagen.corpus.text_column": "abstract",
            "datagen.corpus.id_column": "pmid",
        },
    )
    passages, report = load_passages(cfg, progress=False)
    assert [doc_of(p) for p in passages] == ["p0", "p1", "p2", "p3"] and report.documents == 4
    files = tmp_path / "files"
    files.mkdir()
    for r in rows:
        (files / f"{r['pmid']}.txt").write_text(r["abstract"], encoding="utf-8")
    as_files, _ = load_passages(load_profile("smoke", {**settings, "datagen.corpus.path": str(files)}), progress=False)
    assert [(doc_of(p), p.text) for p in as_files] == [(f"{doc_of(p)}.txt", p.text) for p in passages]
    with pytest.raises(CorpusError, match=r"no column 'text' \(it has \['abstract', 'pmid'\]\)"):
        list(read_dataset_documents(str(ds), split="train"))


def test_profile_errors_name_the_fix(tmp_path):
    with pytest.raises(Exception, match="datagen.corpus.path.*and datagen.corpus.dataset are both set"):
        load_profile("smoke", {"datagen.corpus.path": "a", "datagen.corpus.dataset": "b"})
    with pytest.raises(CorpusError, match="does not exist"):
        load_passages(load_profile("smoke", {"datagen.corpus.path": str(tmp_path / "nowhere")}), progress=False)
    (tmp_path / "only.docx").write_bytes(b"PK")
    with pytest.raises(CorpusError, match=r"no corpus files under .*expected \.txt, \.md"):
        load_passages(load_profile("smoke", {"datagen.corpus.path": str(tmp_path)}), progress=False)
    (tmp_path / "de.txt").write_text(GERMAN, encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no passage of .* is in the run's languages"):
        load_passages(load_profile("smoke", {"datagen.corpus.path": str(tmp_path)}), progress=False)
    assert Document("a", "b", "c").lang == ""


def test_the_course_generates_from_a_folder_given_on_the_command_line(smoke_course, tmp_path, folder):
    """``mmed-course run --only 1 --set datagen.corpus.path=<folder of .txt and .md files>``: notebook 01
    generates from that folder's passages, and its manifest says so."""
    course, _ = smoke_course
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(course / "base_model.json", run / "base_model.json")  # notebook 00's model, reused
    texts = tmp_path / "texts"
    shutil.copytree(folder / "notes", texts / "notes")
    shutil.copytree(folder / "guides", texts / "guides")
    cli = Path(sys.executable).with_name("mmed-course")
    proc = subprocess.run(
        [
            str(cli),
            "run",
            "--profile",
            "smoke",
            "--run-dir",
            str(run),
            "--only",
            "1",
            "--no-progress",
            "--set",
            f"datagen.corpus.path={texts}",
            "--set",
            "datagen.passages_per_language=3",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mmed_helpers.core.jobs import JsonlStore
    from mmed_helpers.core.layout import RunLayout

    layout = RunLayout(run)
    condensed = JsonlStore(layout.generation_store("condense")).records
    sources = {r["passage_id"] for r in condensed.values()}
    assert len(sources) == 3 and all(s.startswith(("notes/", "guides/")) for s in sources), sources
    manifest = json.loads((layout.step_dir("generate") / "manifest.json").read_text())
    assert manifest["outputs"]["corpus"]["kind"] == "files" and manifest["outputs"]["corpus"]["passages"] == 3
    kept = manifest["outputs"]["corpus"]["ingest"]["kept"]
    assert kept == {lang: 3 if lang == "en" else 0 for lang in load_profile("smoke").languages}
