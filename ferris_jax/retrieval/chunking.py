"""Documents -> token-bounded, overlapping chunks, counted with the model's own tokenizer.

Each document is tokenized with character offsets in windows of WINDOW_CHARS characters
(`window_end`: cut before the last space of a run, so each window tokenizes as it does within
the whole text), as its chunks are planned: chunks are made and yielded as they are consumed,
and memory stays flat in a document's size. Short documents are batched through
`tokenizers.Tokenizer.encode_batch`, a long one's windows a few at a time. Every gap between
two tokens gets a level: paragraph (a blank line, or a line break before a Markdown heading),
line, sentence, word (whitespace), piece (a pre-tokenizer split without whitespace:
punctuation, CJK characters) or mid-word. A chunk ends at the best level found in the second
half of its window of `max_tokens` tokens (the rightmost cut of that level), as LangChain's
RecursiveCharacterTextSplitter prefers paragraphs, then lines, then words; it is cut mid-word
only when its window holds no word boundary. The next chunk starts at the first word of the
last `overlap` tokens, and ends past the previous chunk's end where it can.

Every chunk is then re-tokenized as the encoder will see it (document prompt + text + special
tokens) and a chunk that would not fit is cut shorter, so nothing is ever truncated.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import tokenizers

from ferris_jax.errors import require_int
from ferris_jax.retrieval.sources import Document
from ferris_jax.tokenize import TextTokenizer, count_tokens, untruncated

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

# A document is tokenized this many characters at a time (a window, see `window_end`), up to
# REFILL_WINDOWS windows in one call, and CHUNKS_AHEAD chunks are planned and counted at a
# time: memory stays flat in the document's size.
WINDOW_CHARS = 1 << 14
REFILL_WINDOWS = 4
CHUNKS_AHEAD = 64


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
    chunker = _Chunker(tokenizer, max_tokens, overlap, prompt)
    return list(chunker.chunk([document]))


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
    chunker = _Chunker(encoder.tokenizer, max_tokens, overlap, prompt)
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
    most = encoder.max_seq_length - len(untruncated(encoder.tokenizer).encode(prompt).ids)
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
        stop = _next_stop(levels, start, N, max_tokens, excess, spans[-1][1] if spans else 0)
        spans.append((start, stop))
        if stop >= N:
            break
        start = _next_start(levels, start, stop, overlap)
    return spans


def _next_stop(
    levels: np.ndarray,
    start: int,
    N: int,
    max_tokens: int,
    excess: Callable[[int, int], int] | None = None,
    floor: int = 0,
) -> int:
    """The end of the chunk that starts at token `start` of `N`, after the previous chunk's
    end `floor` where it can be; `levels` must reach token `start + max_tokens` or the end."""
    limit = start + max_tokens
    while True:
        stop = N if limit >= N else _best_cut(levels, start, limit, max_tokens, floor)
        over = excess(start, stop) if excess is not None else 0
        if over <= 0:
            return stop
        limit = stop - max(over, 1)
        if limit <= start:
            raise _TooLong(start)


def _next_start(levels: np.ndarray, start: int, stop: int, overlap: int) -> int:
    """Where the chunk after `[start, stop)` starts: at the first word of its last `overlap`
    tokens, or at `stop`."""
    lo = max(stop - overlap, start + 1)
    words = np.flatnonzero(levels[lo:stop] <= WORD) if overlap else ()
    return lo + int(words[0]) if len(words) else stop


def _best_cut(levels: np.ndarray, start: int, limit: int, max_tokens: int, floor: int = 0) -> int:
    """The cut ending a chunk that starts at token `start` and may end at `limit` at most,
    past `floor` where it can be (a chunk that starts in the previous one's overlap and ended
    where it did would be a piece of it)."""
    window = levels[start + 1 : limit + 1]  # cuts at start + 1 .. limit
    first = max(floor - start, 0)  # window[first]: the cut at floor + 1
    if first >= len(window) or int(window[first:].min()) == FORBIDDEN:
        first = 0
    window_from = window[first:]
    late_from = max(min(len(window) - 1, (max_tokens + 1) // 2 - 1), first, 0)
    late = window[late_from:]
    best = int(late.min())
    if best <= WORD:
        return start + 1 + late_from + int(np.flatnonzero(late == best)[-1])
    words = np.flatnonzero(window_from <= WORD)
    if len(words):
        return start + 1 + first + int(words[-1])
    best = int(window_from.min())
    if best == FORBIDDEN:
        raise _TooLong(start)
    return start + 1 + first + int(np.flatnonzero(window_from == best)[-1])


class _TooLong(Exception):
    def __init__(self, token: int):
        self.token = token


def window_end(text: str, start: int, size: int) -> tuple[int, bool]:
    """Where the window of `text` tokenized from character `start` ends, and whether it was
    cut without whitespace.

    A window ends before the last character of a run of spaces or line breaks, in its second
    half where it can: both sides then tokenize as they do within the whole text (WordPiece
    drops the whitespace; a byte-level BPE or Metaspace token takes one leading space). A
    window without such a run ends `size` characters on (a token may then straddle the cut).
    """
    end = start + size
    if end >= len(text):
        return len(text), False
    for lo, hi in ((start + size // 2, end), (start + 1, start + size // 2)):
        while (at := max(text.rfind(" ", lo, hi), text.rfind("\n", lo, hi))) >= lo:
            if not text[at + 1].isspace():
                return at, False
            hi = at
    return end, True


_SURROGATE = re.compile("[\ud800-\udfff]")

# A planned chunk: (first token, stop token, the next chunk's first token, char start, char
# end); char start == char end for a span of nothing but whitespace (no chunk).
_Planned = tuple[int, int, int, int, int]


class _Tokens:
    """One document's tokens, tokenized window by window as its chunks are planned: character
    offsets and cut levels of tokens `base ..`, the ones before the next chunk dropped."""

    def __init__(self, chunker: _Chunker, doc: Document, first: tokenizers.Encoding, end: int):
        self.chunker = chunker
        self.doc = doc
        self.pos = end  # the characters tokenized: text[:pos]
        self.forced = False  # whether text[:pos] was cut without whitespace
        self.base = 0
        self.offsets = np.zeros((0, 2), dtype=np.int64)
        self._levels = np.zeros(0, dtype=np.int8)
        # The first window's levels, computed when first needed: a document that fits one
        # chunk never needs them (most short documents).
        self._first_levels: Callable[[], np.ndarray] | None = None
        self.start = 0  # the first token of the next chunk
        self.floor = 0  # where the chunk before it ends
        self.chunk_index = 0
        self._append(first, 0, False)

    @property
    def done(self) -> bool:
        """Whether the whole text is tokenized."""
        return self.pos >= len(self.doc.text)

    @property
    def end(self) -> int:
        """The number of tokens seen (the document's, once `done`)."""
        return self.base + len(self.offsets)

    @property
    def levels(self) -> np.ndarray:
        """`cut_levels` of tokens `base ..`."""
        if self._first_levels is not None:
            self._levels, self._first_levels = self._first_levels(), None
        return self._levels

    @property
    def finished(self) -> bool:
        return self.done and self.start >= self.end

    def _append(self, encoding: tokenizers.Encoding, at: int, forced: bool) -> None:
        """Add the tokens of a window that starts at character `at` (cut there without
        whitespace if `forced`)."""
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2) + at
        if not len(offsets):
            return
        if not len(self.offsets):
            self.offsets = offsets
            self._first_levels = lambda: self._window_levels(encoding, offsets, None)
            return
        levels = self._window_levels(encoding, offsets, self.offsets[-1], forced)
        self._levels = np.concatenate([self.levels, levels])
        self.offsets = np.concatenate([self.offsets, offsets])

    def _window_levels(
        self,
        encoding: tokenizers.Encoding,
        offsets: np.ndarray,
        last: np.ndarray | None,
        forced: bool = False,
    ) -> np.ndarray:
        """The levels of a window's tokens (`encoding`, at `offsets`), after the token at
        offsets `last` (None: the first window)."""
        word_ids = np.array([-1 if w is None else w for w in encoding.word_ids], dtype=np.int64)
        # The cut before the window's first token is seen with the token before it (and two
        # characters before that, for a sentence end); the two are different words unless
        # the window was cut without whitespace.
        if last is not None:
            offsets = np.concatenate([last[None], offsets])
            word_ids = np.concatenate([word_ids[:1] if forced else [-2], word_ids])
        a = max(int(offsets[0, 0]) - 2, 0)
        levels = cut_levels(self.doc.text[a : int(offsets[-1, 1])], offsets - a, word_ids)
        return levels if last is None else levels[1:]

    def _refill(self) -> None:
        """Tokenize the next few windows of the text (together, so in parallel)."""
        text, size = self.doc.text, self.chunker.window_chars
        windows = []  # (start, end, cut without whitespace at start)
        while len(windows) < REFILL_WINDOWS and not self.done:
            end, forced = window_end(text, self.pos, size)
            windows.append((self.pos, end, self.forced))
            self.pos, self.forced = end, forced
        encodings = self.chunker.tokenizer.encode_batch(
            [text[a:b] for a, b, _ in windows], add_special_tokens=False
        )
        for encoding, (a, _, forced) in zip(encodings, windows, strict=True):
            self._append(encoding, a, forced)

    def _trim(self) -> None:
        """Drop the tokens before `start` once they are most of those kept (copying, so that
        their memory goes)."""
        drop = self.start - self.base
        if drop > 0 and 2 * drop >= len(self.offsets):
            self.offsets, self._levels = self.offsets[drop:].copy(), self.levels[drop:].copy()
            self.base = self.start

    def char_span(self, start: int, stop: int) -> tuple[int, int]:
        """The characters of tokens `[start, stop)` without surrounding whitespace ((0, 0):
        only whitespace)."""
        b = self.base
        spans = _char_spans(self.doc.text, self.offsets, [(start - b, stop - b)])
        return spans[0] if spans else (0, 0)

    def stop(self, start: int, floor: int, excess: Callable[[int, int], int] | None = None) -> int:
        """The end of the chunk from token `start` after the previous one's end `floor`
        (`_next_stop`), tokenizing as needed."""
        max_tokens = self.chunker.max_tokens
        while not self.done and self.end <= start + max_tokens:
            self._refill()
        b = self.base
        # Until the end is tokenized, N is past every token the planner looks at.
        if self.done and excess is None and start + max_tokens >= self.end:
            return self.end  # the rest fits: no cut to choose
        N = len(self.offsets) if self.done else len(self.offsets) + max_tokens + 1
        local = None if excess is None else (lambda s, t: excess(s + b, t + b))
        try:
            floor = max(floor - b, 0)
            return b + _next_stop(self.levels, start - b, N, max_tokens, local, floor)
        except _TooLong as e:
            raise self.chunker._too_long(self.doc, int(self.offsets[e.token, 0])) from None

    def next_start(self, start: int, stop: int) -> int:
        if self.done and stop >= self.end:
            return stop
        b = self.base
        return b + _next_start(self.levels, start - b, stop - b, self.chunker.overlap)

    def plan(self, most: int, tokenize: bool = True) -> list[_Planned]:
        """The next chunks, up to `most`, not yet counted; with `tokenize=False` only as far
        as the text tokenized so far goes."""
        self._trim()
        planned = []
        start, floor, max_tokens = self.start, self.floor, self.chunker.max_tokens
        while len(planned) < most and not (self.done and start >= self.end):
            if not tokenize and not self.done and self.end <= start + max_tokens:
                break
            stop = self.stop(start, floor)
            after = self.next_start(start, stop)
            planned.append((start, stop, after, *self.char_span(start, stop)))
            start, floor = after, stop
        return planned

    def commit(self, planned: list[_Planned], sizes: list[int]) -> Iterator[Chunk]:
        """The chunks of `planned`, given the `sizes` of those with text; the first that does
        not fit is planned again, cut shorter, and ends the batch."""
        doc, sizes = self.doc, iter(sizes)
        for start, stop, after, a, b in planned:
            n = next(sizes) if a < b else 0
            replanned = n > self.chunker.limit  # a tokenization that depends on context
            if replanned:
                stop, a, b, n = self.chunker._replan(doc, self, start)
                after = self.next_start(start, stop)
            self.start, self.floor = after, stop
            if a < b:
                k, self.chunk_index = self.chunk_index, self.chunk_index + 1
                yield Chunk(doc.id, k, doc.text[a:b], a, b, dict(doc.metadata), n)
            if replanned:
                return


class _Chunker:
    def __init__(
        self,
        tokenizer: TextTokenizer | tokenizers.Tokenizer,
        max_tokens: int,
        overlap: int,
        prompt: str,
    ):
        self.counter = tokenizer  # counts tokens (`count_tokens`: its fast path, if any)
        self.tokenizer = untruncated(tokenizer)  # tokens with offsets
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
        self.limit = self.max_tokens + len(self.tokenizer.encode(prompt).ids)
        self.window_chars = WINDOW_CHARS

    def count(self, texts: list[str]) -> list[int]:
        """Tokens the encoder feeds for each text (prompt and special tokens included)."""
        if not texts:
            return []
        return count_tokens(self.counter, [self.prompt + t for t in texts]).tolist()

    def _count_planned(self, doc: Document, planned: list[_Planned]) -> list[int]:
        return self.count([doc.text[a:b] for *_, a, b in planned if a < b])

    def chunk(self, documents: list[Document]) -> Iterator[Chunk]:
        """The chunks of `documents` in order, made as they are consumed."""
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(
                    f"documents[{i}] is {type(doc).__name__}, expected a "
                    "ferris_jax.retrieval.sources.Document"
                )
            if not doc.text.isascii() and (bad := _SURROGATE.search(doc.text)):
                raise ValueError(
                    f"document {doc.id!r}: a lone surrogate at character {bad.start()}"
                )
        sizes = self._whole_sizes(documents)
        rest = self._planned_chunks([d for d, n in zip(documents, sizes, strict=True) if n < 0])
        for doc, n in zip(documents, sizes, strict=True):
            if n >= 0:
                yield Chunk(doc.id, 0, doc.text, 0, len(doc.text), dict(doc.metadata), n)
            else:
                yield from next(rest)

    def _whole_sizes(self, documents: list[Document]) -> list[int]:
        """For each document that is one chunk as it is, the tokens the encoder feeds for it;
        -1 for the others (to be planned). Those are the documents `_planned_chunks` would
        give one chunk of their whole text: a single window (`WINDOW_CHARS`) that starts and
        ends with a printable ASCII character (the first and last tokens' edges), at most
        `max_tokens` tokens, and at most `limit` with the prompt and the special tokens."""
        sizes = [-1] * len(documents)
        plain = [
            i
            for i, d in enumerate(documents)
            if 0 < len(d.text) <= self.window_chars
            and "!" <= d.text[0] <= "~"
            and "!" <= d.text[-1] <= "~"
        ]
        texts = [documents[i].text for i in plain]
        alone = count_tokens(self.counter, texts, add_special_tokens=False)
        short = [
            (i, t) for i, t, n in zip(plain, texts, alone, strict=True) if n <= self.max_tokens
        ]
        fed = self.count([t for _, t in short])
        for (i, _), n in zip(short, fed, strict=True):
            if n <= self.limit:
                sizes[i] = n
        return sizes

    def _planned_chunks(self, documents: list[Document]) -> Iterator[Iterator[Chunk]]:
        """The chunks of each document, planned from its tokens' cut levels: one iterator per
        document, in order."""
        if not documents:
            return
        # The documents' first windows are tokenized together, and the chunks they hold (all
        # of a short document's) counted together.
        ends = [window_end(d.text, 0, self.window_chars) for d in documents]
        encodings = self.tokenizer.encode_batch(
            [d.text[:end] for d, (end, _) in zip(documents, ends, strict=True)],
            add_special_tokens=False,
        )
        streams: list[_Tokens | None] = []
        for doc, encoding, (end, forced) in zip(documents, encodings, ends, strict=True):
            streams.append(_Tokens(self, doc, encoding, end))
            streams[-1].forced = forced
        del encodings
        firsts = [t.plan(CHUNKS_AHEAD, tokenize=False) for t in streams]
        texts = [t.doc.text[a:b] for t, p in zip(streams, firsts, strict=True) for *_, a, b in p]
        sizes = iter(self.count([text for text in texts if text]))
        for i, planned in enumerate(firsts):
            tokens, streams[i] = streams[i], None  # a document's tokens go once it is chunked
            yield self._document_chunks(
                tokens, planned, [next(sizes) for *_, a, b in planned if a < b]
            )

    def _document_chunks(
        self, tokens: _Tokens, planned: list[_Planned], sizes: list[int]
    ) -> Iterator[Chunk]:
        """A document's chunks: those `planned` (counted: `sizes`), then the rest."""
        yield from tokens.commit(planned, sizes)
        while not tokens.finished:
            planned = tokens.plan(CHUNKS_AHEAD)
            yield from tokens.commit(planned, self._count_planned(tokens.doc, planned))

    def _replan(self, doc: Document, tokens: _Tokens, start: int) -> tuple[int, int, int, int]:
        """The chunk from token `start`, counted alone as it is planned and cut shorter until
        it fits: (stop token, char start, char end, its tokens)."""

        def excess(s: int, t: int) -> int:
            a, b = tokens.char_span(s, t)
            return self.count([doc.text[a:b]])[0] - self.limit

        stop = tokens.stop(start, tokens.floor, excess)
        a, b = tokens.char_span(start, stop)
        return stop, a, b, self.count([doc.text[a:b]])[0] if a < b else 0

    def _too_long(self, doc: Document, at: int) -> ValueError:
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
