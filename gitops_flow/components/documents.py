"""Documents: a repository file's bytes as text sections (text, Markdown, HTML, JSON, JSONL, CSV, PDF), and those
sections split into chunks, each with the line it starts at (``metadata.source`` is ``path:line``)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

import orjson

from gitops_flow.exceptions import BuildError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".text")
HTML_SUFFIXES = (".html", ".htm")
READ_SUFFIXES = (*TEXT_SUFFIXES, *HTML_SUFFIXES, ".json", ".jsonl", ".csv", ".pdf")
MAX_PDF_PAGES = 2_000


@dataclass(frozen=True, slots=True)
class Section:
    """A stretch of a file's text and the line (for a PDF: the page) it starts at, from 1."""

    text: str
    line: int
    page: bool = False  # a PDF's page: its chunks all cite the page, the text has no lines of the file


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document as it is embedded and retrieved; ``key`` is the hash of its content."""

    text: str
    source: str  # path:line

    @property
    def key(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def readable(path: str) -> bool:
    """Whether a file of this name is read as a document."""
    return path.lower().endswith(READ_SUFFIXES)


def sections(path: str, raw: bytes) -> list[Section]:
    """The text of a file by its kind (its suffix); BuildError ``unreadable-document`` naming the file otherwise."""
    lower = path.lower()
    try:
        if lower.endswith(".pdf"):
            try:
                return _pdf(raw)
            except BuildError as exc:
                raise BuildError(f"{path}: {exc}", code=exc.code) from None
        text = raw.decode("utf-8-sig")
        if lower.endswith(HTML_SUFFIXES):
            return [_html(text)]
        if lower.endswith(".jsonl"):
            return [Section(line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if lower.endswith(".json"):
            orjson.loads(text)  # a broken JSON file is refused, not indexed as prose
            return [Section(text, 1)]
        if lower.endswith(".csv"):
            return list(_csv(text))
        return [Section(text, 1)]
    except (UnicodeDecodeError, orjson.JSONDecodeError, csv.Error) as exc:
        raise BuildError(f"{path} cannot be read: {exc}", code="unreadable-document") from None


def _csv(text: str) -> Iterator[Section]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return
    for row in reader:
        if any(cell.strip() for cell in row):
            yield Section("\n".join(f"{k}: {v}" for k, v in zip(header, row, strict=False)), reader.line_num)


class _Text(HTMLParser):
    """The visible text of an HTML page, with where it starts; scripts and styles are not text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.first: int | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            if self.first is None:
                self.first = self.getpos()[0]
            self.parts.append(data)


def html_text(text: str) -> str:
    """The visible text of an HTML page, a paragraph a line (scripts and styles left out)."""
    return _html(text).text


def _html(text: str) -> Section:
    parser = _Text()
    parser.feed(text)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return Section("\n".join(line for line in lines if line), parser.first or 1)


def _pdf(raw: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = reader.pages
        if len(pages) > MAX_PDF_PAGES:
            raise BuildError(
                f"the PDF has {len(pages):,} pages; at most {MAX_PDF_PAGES:,} are read", code="corpus-too-large"
            )
        return [Section(page.extract_text() or "", n, page=True) for n, page in enumerate(pages, 1)]
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"a PDF cannot be read: {exc}", code="unreadable-document") from None


def chunks(path: str, found: list[Section], *, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """The sections split by LangChain's recursive character splitter; each chunk's source is ``path:line`` (the
    line its first character is on)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True)
    made: list[Chunk] = []
    for section in found:
        if not section.text.strip():
            continue
        for doc in splitter.create_documents([section.text]):
            start = int(doc.metadata.get("start_index", 0))
            line = section.line + (section.text.count("\n", 0, start) if start > 0 and not section.page else 0)
            made.append(Chunk(doc.page_content, f"{path}:{line}"))
    return made
