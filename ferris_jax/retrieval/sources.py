"""Documents for retrieval, read lazily from text and Markdown files, folders and JSON Lines.

`read_documents(paths)` yields one `Document` at a time: a text or Markdown file is one
document; a `.jsonl` file holds one document per line and is read line by line, so memory
stays at one document's text (plus the ids seen, to refuse duplicates).

A folder walk reads regular files only (a FIFO or device named `*.txt` there is skipped, as
`grep -r` skips them), and a subfolder it cannot list is an error naming it, not a silent gap
in the index. A FIFO or character device named directly (a `mkfifo docs.jsonl` that another
program writes) is read once, as a stream, by its extension like a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES
_ENCODING_HINT = (
    "convert the file to UTF-8, or give its encoding (encoding=, or --encoding on the "
    "ferris-jax command line)"
)


class DocumentError(ValueError):
    """A source cannot be read as documents; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: a unique `id`, its `text` and JSON-serializable `metadata`."""

    id: str
    text: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise TypeError(f"Document id must be a non-empty str, got {self.id!r:.60}")
        if not isinstance(self.text, str):
            raise TypeError(
                f"Document {self.id!r}: text must be a str, got {type(self.text).__name__}"
            )
        if not isinstance(self.metadata, dict):
            raise TypeError(
                f"Document {self.id!r}: metadata must be a dict, got {type(self.metadata).__name__}"
            )


def read_documents(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    text_field: str = "text",
    id_field: str = "id",
    metadata_fields: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> Iterator[Document]:
    """The documents of files and folders, one at a time, in a fixed order.

    Sources are read in the order given; a folder is walked recursively in sorted order of
    relative paths, taking regular `.txt`, `.md`, `.markdown` and `.jsonl` files and skipping
    other files, FIFOs, devices and hidden entries (names starting with "."). A file named
    directly must have one of those extensions; it may be a FIFO or character device, read
    once as a stream.

    - A text or Markdown file is one document: its id is the path relative to the folder given
      (with "/" separators), or the file name for a file given directly; its metadata is
      `{"source": "<path>"}`. A leading byte-order mark is dropped and line endings become
      "\\n", as Python's text mode reads them.
    - A JSON Lines file holds one JSON object per line (blank lines are skipped): the text is
      `record[text_field]` (e.g. "page_content" for LangChain exports), the id is
      `record[id_field]` (a string; "<file id>:<line>" when the field is absent). Metadata, as
      LangChain's and LlamaIndex's documents carry it, is `{"source": "<path>", "line": n}`
      updated with the record's other top-level fields (only `metadata_fields` of them, if
      given) and then with the fields of its "metadata" object, if any.

    Args:
        paths: a file or folder, or several.
        text_field, id_field: the JSON Lines keys of the text and the id.
        metadata_fields: the top-level JSON Lines fields kept as metadata (default: all but the
            id and text fields).
        encoding: of every file (decoding errors are refused, never replaced).

    Returns:
        An iterator of `Document`. Paths and arguments are checked at once; files are read as
        the iterator is consumed.

    Raises:
        FileNotFoundError: a path does not exist.
        DocumentError: a path that is neither a folder, a file, a FIFO nor a character device;
            (while iterating) a subfolder that cannot be listed; a file and line that cannot
            be read: undecodable
            bytes, invalid JSON, a line that is not an object, a missing or non-string text,
            a non-string id, an id seen before in this call.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources = [Path(p) for p in paths]
    for option, value in (("text_field", text_field), ("id_field", id_field)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{option} must be a non-empty str, got {value!r}")
    if metadata_fields is not None:
        if isinstance(metadata_fields, str) or not all(isinstance(f, str) for f in metadata_fields):
            raise TypeError(f"metadata_fields must be a list of str, got {metadata_fields!r}")
        metadata_fields = tuple(metadata_fields)
    "".encode(encoding)  # an unknown encoding fails here, not at the first file
    for path in sources:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            continue
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            raise DocumentError(
                f"{path}: not a file, folder, FIFO or character device; read_documents takes "
                f"{', '.join(SUFFIXES)} files and folders"
            )
        if path.suffix.lower() not in SUFFIXES:
            kind = "file" if stat.S_ISREG(mode) else "FIFO or device, read as a stream,"
            raise DocumentError(
                f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
                f"read_documents takes {', '.join(SUFFIXES)} files and folders (a {kind} "
                "is read by its extension)"
            )
    reader = _Reader(text_field, id_field, metadata_fields, encoding)
    return reader.read(sources)


@dataclasses.dataclass
class _Reader:
    text_field: str
    id_field: str
    metadata_fields: tuple[str, ...] | None
    encoding: str
    # Every id yielded so far -> where it was read ("<file>" or "<file>:<line>").
    seen: dict[str, str] = dataclasses.field(default_factory=dict)

    def read(self, sources: list[Path]) -> Iterator[Document]:
        for source in sources:
            files = _walk(source) if source.is_dir() else [(source, source.name)]
            for path, doc_id in files:
                if path.suffix.lower() in JSONL_SUFFIXES:
                    yield from self._jsonl(path, doc_id)
                else:
                    doc = Document(doc_id, self._text(path), {"source": str(path)})
                    yield self._unique(doc, str(path))

    def _unique(self, doc: Document, where: str) -> Document:
        first = self.seen.get(doc.id)
        if first is not None:
            hint = (
                ""
                if ":" in where
                else (
                    "; a text file's id is its path relative to the folder given, so give one "
                    "folder above both"
                )
            )
            raise DocumentError(
                f"{where}: duplicate document id {doc.id!r} (first at {first}){hint}"
            )
        self.seen[doc.id] = where
        return doc

    def _text(self, path: Path) -> str:
        data = path.read_bytes()
        bom = data.startswith(b"\xef\xbb\xbf") and self.encoding.lower().replace("-", "") == "utf8"
        try:
            text = data[3:].decode(self.encoding) if bom else data.decode(self.encoding)
        except UnicodeDecodeError as e:
            at = e.start + 3 * bom
            line = data.count(b"\n", 0, at) + 1
            raise DocumentError(
                f"{path}:{line}: cannot decode byte {at} as {self.encoding} ({e.reason}); "
                f"{_ENCODING_HINT}"
            ) from None
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def _jsonl(self, path: Path, file_id: str) -> Iterator[Document]:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                where = f"{path}:{number}"
                try:
                    line = raw.decode(self.encoding)
                except UnicodeDecodeError as e:
                    raise DocumentError(
                        f"{where}: cannot decode byte {e.start} of the line as {self.encoding} "
                        f"({e.reason}); {_ENCODING_HINT}"
                    ) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DocumentError(
                        f"{where}: invalid JSON ({e.msg} at column {e.colno})"
                    ) from None
                yield self._unique(self._record(record, path, number, file_id), where)

    def _record(self, record: Any, path: Path, number: int, file_id: str) -> Document:
        where = f"{path}:{number}"
        if not isinstance(record, dict):
            raise DocumentError(f"{where}: expected a JSON object, got {type(record).__name__}")
        text = record.get(self.text_field)
        if not isinstance(text, str):
            why = (
                f"it is missing; pass text_field= to read another key (keys: {sorted(record)})"
                if text is None
                else f"got {type(text).__name__}"
            )
            raise DocumentError(
                f"{where}: the text field {self.text_field!r} must be a string ({why})"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise DocumentError(
                f"{where}: {self.text_field!r} has a lone surrogate at position {e.start}"
            ) from None
        doc_id = record.get(self.id_field, f"{file_id}:{number}")
        if not isinstance(doc_id, str) or not doc_id:
            raise DocumentError(
                f"{where}: the id field {self.id_field!r} must be a non-empty string, got "
                f"{type(doc_id).__name__} {doc_id!r:.40} (write it as a JSON string)"
            )
        nested = record.get("metadata", {})
        if not isinstance(nested, dict):
            raise DocumentError(
                f"{where}: 'metadata' must be a JSON object, got {type(nested).__name__}"
            )
        fields = self.metadata_fields
        skip = {self.text_field, self.id_field, "metadata"}
        top = (
            {k: v for k, v in record.items() if k not in skip}
            if fields is None
            else {k: record[k] for k in fields if k in record and k not in skip}
        )
        return Document(doc_id, text, {"source": str(path), "line": number, **top, **nested})


def _walk(folder: Path) -> list[tuple[Path, str]]:
    """(path, "/"-separated path relative to `folder`) of the regular files to read under
    `folder`, sorted by relative path, hidden entries skipped. A FIFO or device is skipped (it
    could block the walk forever); a folder that cannot be listed is an error, since skipping
    it would leave its documents out of the index (and `--prune` would remove them)."""

    def refuse(error: OSError) -> None:
        raise DocumentError(
            f"{error.filename}: cannot read this folder ({error.strerror}); make it readable, "
            "or give the files and folders to read without it"
        )

    found = []
    for root, dirs, files in os.walk(folder, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root) / name
            if name.startswith(".") or path.suffix.lower() not in SUFFIXES:
                continue
            if path.is_file() or not path.exists():  # a broken link fails when read, by name
                found.append((path, path.relative_to(folder).as_posix()))
    return sorted(found, key=lambda item: item[1])
