"""Documents -> token-bounded, overlapping chunks, counted with the model's own tokenizer.

Each document is tokenized once with character offsets (documents batched through
`tokenizers.Tokenizer.encode_batch`). Every gap between two tokens gets a level: paragraph
(a blank line, or a line break before a Markdown heading), line, sentence, word (whitespace),
piece (a pre-tokenizer split without whitespace: punctuation, CJK characters) or mid-word.
A chunk ends at the best level found in the second half of its window of `max_tokens` tokens
(the rightmost cut of that level), as LangChain's RecursiveCharacterTextSplitter prefers
paragraphs, then lines, then words; it is cut mid-word only when its window holds no word
boundary. The next chunk starts at the first word of the last `overlap` tokens.

Every chunk is then re-tokenized as the encoder will see it (document prompt + text + special
tokens) and a chunk that would not fit is cut shorter, so nothing is ever truncated.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import tokenizers

from ferris_jax.errors import require_int
from ferris_jax.retrieval.sources import Document
from ferris_jax.tokenize import TextTokenizer

if TYPE_CHECKING:
    from ferris_jax.encoder import Encoder

# Cut levels, best first (FORBIDDEN: the two tokens come from one character).
PARAGRAPH, LINE, SENTENCE, WORD, PIECE, MID_WORD, FORBIDDEN = range(7)

_WHITESPACE = np.array(
    [ord(c) for c in " \t\n\r\v\f\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2028\u2029"]
    + list(range(0x2000, 0x200B))
    + [0x202F, 0x205F, 0x3000],
    dtype=np.uint32,
)
_SENTENCE_END = np.array([ord(c) for c in ".!?"], dtype=np.uint32)
_CJK_SENTENCE_END = np.array([ord(c) for c in "。！？"], dtype=np.uint32)
_CLOSERS = np.array([ord(c) for c in "\"')]’”»"], dtype=np.uint32)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A piece of a document: `document.text[start:end] == text`.

    Attributes:
        document_id: the id of the document it comes from.
        chunk_index: its number within the document (0, 1, ...).
        text: the chunk's text.
        start, end: character offsets of `text` in the document's text.
        metadata: the document's metadata (a copy per chunk).
        num_tokens: the tokens the encoder feeds for it: prompt, text and special tokens.
    """

    document_id: str
    chunk_index: int
    text: str
    start: int
    end: int
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_tokens: int = 0

    @property
    def id(self) -> str:
        """`"<document_id>#<chunk_index>"`."""
        return f"{self.document_id}#{self.chunk_index}"


def chunk_document(
    document: Document,
    tokenizer: TextTokenizer | tokenizers.Tokenizer,
    *,
    max_tokens: int,
    overlap: int = 0,
    prompt: str = "",
) -> list[Chunk]:
    """Split one document into chunks of at most `max_tokens` tokens.

    Args:
        document: the document (whitespace-only text gives no chunks).
        tokenizer: the model's tokenizer (`enc.tokenizer`, or a `tokenizers.Tokenizer`).
        max_tokens: tokens of a chunk's text at most, special tokens and prompt not counted:
            `prompt + chunk.text` tokenizes to at most `max_tokens` plus the tokens of `prompt`
            alone (special tokens included).
        overlap: tokens a chunk repeats from the end of the one before, at most (it starts at
            a word); at most `max_tokens // 2`.
        prompt: the prompt the chunks are embedded with (e.g. "passage: ").

    Returns:
        The chunks in document order.
    """
    return _Chunker(_untruncated(tokenizer), max_tokens, overlap, prompt).chunk([document])


def chunk_documents(
    documents: Iterable[Document],
    encoder: Encoder,
    *,
    max_tokens: int | None = None,
    overlap: int | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    batch_size: int = 64,
) -> Iterator[Chunk]:
    """Split documents into chunks that `encoder` embeds whole (never truncated).

    Args:
        documents: `Document`s (e.g. from `read_documents`), consumed lazily.
        encoder: the model the chunks are for: its tokenizer counts the tokens and its
            `max_seq_length` bounds them.
        max_tokens: tokens of a chunk's text at most (default: the most that fit
            `max_seq_length` with the special tokens and the document prompt).
        overlap: tokens repeated from the previous chunk, at most (default `max_tokens // 8`).
        prompt_name: the prompt the chunks will be embedded with (default: the one
            `encoder.encode_document` uses).
        prompt: a literal prompt instead of `prompt_name`.
        batch_size: documents tokenized together.

    Returns:
        An iterator of `Chunk`, document by document.

    Raises:
        ValueError: `max_tokens` does not fit `max_seq_length`, or an option is out of range.
    """
    prompt = document_prompt(encoder, prompt_name=prompt_name, prompt=prompt)
    max_tokens, overlap = chunk_sizes(encoder, max_tokens, overlap, prompt=prompt)
    raw = _untruncated(encoder.tokenizer)
    chunker = _Chunker(raw, max_tokens, overlap, prompt)
    batch_size = require_int("batch_size", batch_size)
    documents = iter(documents)
    while batch := list(itertools.islice(documents, batch_size)):
        yield from chunker.chunk(batch)


def chunk_sizes(
    encoder: Encoder,
    max_tokens: int | None = None,
    overlap: int | None = None,
    *,
    prompt: str = "",
) -> tuple[int, int]:
    """The (max_tokens, overlap) `chunk_documents` uses for these options: `max_tokens`
    defaults to the most that fit `max_seq_length` beside the special tokens and `prompt`,
    `overlap` to `max_tokens // 8`. ValueError where `max_tokens` does not fit."""
    most = encoder.max_seq_length - len(_untruncated(encoder.tokenizer).encode(prompt).ids)
    if most < 1:
        raise ValueError(
            f"the prompt {prompt!r} leaves no room for text in max_seq_length="
            f"{encoder.max_seq_length}"
        )
    if max_tokens is None:
        max_tokens = most
    elif require_int("max_tokens", max_tokens) > most:
        raise ValueError(
            f"max_tokens={max_tokens} does not fit: max_seq_length={encoder.max_seq_length} "
            f"leaves {most} tokens for text beside the special tokens and the prompt "
            f"{prompt!r}; pass max_tokens <= {most} (or raise enc.max_seq_length)"
        )
    return max_tokens, max_tokens // 8 if overlap is None else overlap


def document_prompt(
    encoder: Encoder, *, prompt_name: str | None = None, prompt: str | None = None
) -> str:
    """The prompt `encoder.encode_document(texts, prompt_name=..., prompt=...)` prepends."""
    return encoder.prompt_for("document", prompt_name, prompt)


# Our own copy of each tokenizer without truncation or padding, made once per tokenizer.
_COPIES: weakref.WeakKeyDictionary[tokenizers.Tokenizer, tokenizers.Tokenizer] = (
    weakref.WeakKeyDictionary()
)


def _untruncated(tokenizer: TextTokenizer | tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    raw = tokenizer.tokenizer if isinstance(tokenizer, TextTokenizer) else tokenizer
    if not isinstance(raw, tokenizers.Tokenizer):
        raise TypeError(
            "tokenizer must be a ferris_jax TextTokenizer (enc.tokenizer) or a "
            f"tokenizers.Tokenizer, got {type(tokenizer).__name__}"
        )
    if raw.truncation is None and raw.padding is None:
        return raw
    copy = _COPIES.get(raw)
    if copy is None:
        copy = tokenizers.Tokenizer.from_str(raw.to_str())
        copy.no_truncation()
        copy.no_padding()
        _COPIES[raw] = copy
    return copy


def cut_levels(text: str, offsets: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """The level of a cut before each token: `levels[i]` for a cut between tokens i - 1 and i
    (`levels[0]` is FORBIDDEN).

    Args:
        text: the document text.
        offsets: `[N, 2]` character offsets of its tokens (no special tokens).
        word_ids: `[N]` the pre-tokenized word each token comes from.
    """
    N = len(offsets)
    levels = np.full(N, FORBIDDEN, dtype=np.int8)
    if N < 2:
        return levels
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    newline = (chars == 10) | ((chars == 13) & (np.append(chars[1:], 0) != 10))
    space = np.isin(chars, _WHITESPACE)
    zero = np.zeros(1, dtype=np.int64)
    spaces = np.concatenate([zero, np.cumsum(space)])
    newlines = np.concatenate([zero, np.cumsum(newline)])
    lo, hi = offsets[:-1, 1], offsets[1:, 0]  # the gap before token i = text[lo:hi]
    ok = hi >= lo
    lo, hi = np.where(ok, lo, 0), np.where(ok, hi, 0)
    n_space = spaces[hi] - spaces[lo]
    n_newline = newlines[hi] - newlines[lo]
    padded = np.concatenate([np.zeros(2, dtype=np.uint32), chars, np.zeros(1, dtype=np.uint32)])
    last, before_last, first = padded[lo + 1], padded[lo], padded[hi + 2]
    ends_sentence = np.isin(last, _SENTENCE_END) | (
        np.isin(last, _CLOSERS) & np.isin(before_last, _SENTENCE_END)
    )
    cut = np.select(
        [
            ~ok,
            (n_newline >= 2) | ((n_newline >= 1) & (first == ord("#"))),
            n_newline >= 1,
            ((n_space > 0) & ends_sentence) | np.isin(last, _CJK_SENTENCE_END),
            n_space > 0,
            word_ids[1:] != word_ids[:-1],
        ],
        [FORBIDDEN, PARAGRAPH, LINE, SENTENCE, WORD, PIECE],
        MID_WORD,
    )
    levels[1:] = cut
    return levels


def plan_chunks(
    levels: np.ndarray,
    max_tokens: int,
    overlap: int,
    excess: Callable[[int, int], int] | None = None,
) -> list[tuple[int, int]]:
    """Token spans `[(start, stop), ...]` of the chunks of one document, given `cut_levels`.

    `excess(start, stop)`, if given, says by how many tokens a span overflows once tokenized
    alone (<= 0: it fits); an overflowing span is cut shorter until it fits.
    """
    N = len(levels)
    spans: list[tuple[int, int]] = []
    start = 0
    while start < N:
        limit = start + max_tokens
        while True:
            stop = N if limit >= N else _best_cut(levels, start, limit, max_tokens)
            over = excess(start, stop) if excess is not None else 0
            if over <= 0:
                break
            limit = stop - max(over, 1)
            if limit <= start:
                raise _TooLong(start)
        spans.append((start, stop))
        if stop >= N:
            break
        lo = max(stop - overlap, start + 1)
        words = np.flatnonzero(levels[lo:stop] <= WORD) if overlap else ()
        start = lo + int(words[0]) if len(words) else stop
    return spans


def _best_cut(levels: np.ndarray, start: int, limit: int, max_tokens: int) -> int:
    """The cut ending a chunk that starts at token `start` and may end at `limit` at most."""
    window = levels[start + 1 : limit + 1]  # cuts at start + 1 .. limit
    late_from = max(min(len(window) - 1, (max_tokens + 1) // 2 - 1), 0)
    late = window[late_from:]
    best = int(late.min())
    if best <= WORD:
        return start + 1 + late_from + int(np.flatnonzero(late == best)[-1])
    words = np.flatnonzero(window <= WORD)
    if len(words):
        return start + 1 + int(words[-1])
    best = int(window.min())
    if best == FORBIDDEN:
        raise _TooLong(start)
    return start + 1 + int(np.flatnonzero(window == best)[-1])


class _TooLong(Exception):
    def __init__(self, token: int):
        self.token = token


class _Chunker:
    def __init__(self, tokenizer: tokenizers.Tokenizer, max_tokens: int, overlap: int, prompt):
        self.tokenizer = tokenizer
        self.max_tokens = require_int("max_tokens", max_tokens)
        self.overlap = require_int("overlap", overlap, minimum=0)
        if self.overlap > self.max_tokens // 2:
            raise ValueError(
                f"overlap={overlap} must be at most max_tokens // 2 = {self.max_tokens // 2}"
            )
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        self.prompt = prompt
        # Tokens of the prompt alone with the special tokens: what a chunk's text adds to.
        self.limit = self.max_tokens + len(tokenizer.encode(prompt).ids)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens the encoder feeds for each text (prompt and special tokens included)."""
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch_fast([self.prompt + t for t in texts])
        return [len(e.ids) for e in encodings]

    def chunk(self, documents: list[Document]) -> list[Chunk]:
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(
                    f"documents[{i}] is {type(doc).__name__}, expected a "
                    "ferris_jax.retrieval.sources.Document"
                )
            if not doc.text.isascii():
                try:
                    doc.text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise ValueError(
                        f"document {doc.id!r}: a lone surrogate at character {e.start}"
                    ) from None
        encodings = self.tokenizer.encode_batch(
            [d.text for d in documents], add_special_tokens=False
        )
        planned = []
        for doc, encoding in zip(documents, encodings, strict=True):
            offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
            word_ids = np.array([-1 if w is None else w for w in encoding.word_ids])
            levels = cut_levels(doc.text, offsets, word_ids)
            try:
                spans = plan_chunks(levels, self.max_tokens, self.overlap)
            except _TooLong as e:
                raise self._too_long(doc, offsets, e.token) from None
            planned.append((doc, offsets, levels, _char_spans(doc.text, offsets, spans)))
        counts = iter(self.count([d.text[a:b] for d, _, _, spans in planned for a, b in spans]))
        chunks = []
        for doc, offsets, levels, spans in planned:
            sizes = [next(counts) for _ in spans]
            if any(n > self.limit for n in sizes):  # a tokenization that depends on context
                spans, sizes = self._replan(doc, offsets, levels)
            chunks.extend(
                Chunk(doc.id, k, doc.text[a:b], a, b, dict(doc.metadata), n)
                for k, ((a, b), n) in enumerate(zip(spans, sizes, strict=True))
            )
        return chunks

    def _replan(self, doc: Document, offsets: np.ndarray, levels: np.ndarray):
        def excess(start: int, stop: int) -> int:
            a, b = (_char_spans(doc.text, offsets, [(start, stop)]) or [(0, 0)])[0]
            return self.count([doc.text[a:b]])[0] - self.limit

        try:
            spans = plan_chunks(levels, self.max_tokens, self.overlap, excess)
        except _TooLong as e:
            raise self._too_long(doc, offsets, e.token) from None
        spans = _char_spans(doc.text, offsets, spans)
        return spans, self.count([doc.text[a:b] for a, b in spans])

    def _too_long(self, doc: Document, offsets: np.ndarray, token: int) -> ValueError:
        at = int(offsets[token, 0])
        return ValueError(
            f"document {doc.id!r}: the text at character {at} ({doc.text[at : at + 20]!r}) "
            f"cannot be cut into chunks of max_tokens={self.max_tokens} tokens; raise max_tokens"
        )


def _char_spans(
    text: str, offsets: np.ndarray, spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The character spans of token spans, without surrounding whitespace; spans of nothing
    but whitespace are dropped."""
    out = []
    for start, stop in spans:
        a, b = int(offsets[start, 0]), int(offsets[stop - 1, 1])
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            out.append((a, b))
    return out
