"""Text -> token ids with the Hugging Face `tokenizers` library (unpadded: `batching` pads).

WordPiece tokenizers (BERT, MiniLM, E5, BGE, GTE, ...) take a faster path where the
`nanotoken` package is installed (a core dependency wherever it has a wheel; elsewhere
`pip install "ferris-jax[fast-tokenizer]"` builds it) and gives the same ids as `tokenizers`
on an exactness probe run at load (`_probe_texts`, untruncated, and truncation at each
`max_seq_length`); any difference, an unsupported tokenizer or `FERRIS_JAX_FAST_TOKENIZER=0`
(or false/no/off; anything but those and 1/true/yes/on is refused) keeps `tokenizers`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

import numpy as np
import tokenizers
from tokenizers import normalizers, pre_tokenizers

from ferris_jax.errors import env_flag


@dataclasses.dataclass(frozen=True)
class Tokenized:
    """Unpadded token ids of n texts, concatenated: text i is `ids[starts[i]:][:lengths[i]]`."""

    ids: np.ndarray  # [total] int32
    type_ids: np.ndarray | None  # [total] int32; None when every type id is 0
    starts: np.ndarray  # [n] int64
    lengths: np.ndarray  # [n] int32, special tokens included
    truncated: np.ndarray  # [n] bool

    def __len__(self) -> int:
        return len(self.lengths)

    def ids_per_text(self) -> list[list[int]]:
        """The token ids of each text, as lists."""
        return self._per_text(self.ids)

    def type_ids_per_text(self) -> list[list[int]]:
        """The token type ids of each text, as lists."""
        return self._per_text(self.type_ids if self.type_ids is not None else 0 * self.ids)

    def token_sources(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For the tokens of texts `rows`, in order: (which of `rows` each belongs to, its index
        within its text, its index into `ids`)."""
        lengths = self.lengths[rows]
        text = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(text.size) - (np.cumsum(lengths, dtype=np.int64) - lengths)[text]
        return text, position, self.starts[rows][text] + position

    def take(self, rows: np.ndarray) -> Tokenized:
        """The texts `rows`, in that order, as their own compact `Tokenized`."""
        lengths = self.lengths[rows]
        starts = np.cumsum(lengths, dtype=np.int64) - lengths
        _, _, source = self.token_sources(rows)
        type_ids = None if self.type_ids is None else self.type_ids[source]
        return Tokenized(self.ids[source], type_ids, starts, lengths, self.truncated[rows])

    @staticmethod
    def concat(parts: Sequence[Tokenized]) -> Tokenized:
        """The texts of all `parts`, in order."""
        sizes = [p.ids.size for p in parts]
        offsets = np.cumsum([0, *sizes[:-1]], dtype=np.int64)
        typed = any(p.type_ids is not None for p in parts)
        return Tokenized(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.type_ids if p.type_ids is not None else 0 * p.ids for p in parts])
            if typed
            else None,
            np.concatenate([p.starts + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.lengths for p in parts]),
            np.concatenate([p.truncated for p in parts]),
        )

    def _per_text(self, flat: np.ndarray) -> list[list[int]]:
        return [flat[s : s + n].tolist() for s, n in zip(self.starts, self.lengths, strict=True)]


def validate_texts(texts: Any, start: int = 0, name: str = "texts") -> list[str]:
    """The inputs as a list of str, in order (`start`: the first text's index in a stream, and
    `name` the argument's, for error messages).

    Raises TypeError for what is not an ordered collection of str (None, bytes, a set, a
    mapping) naming the first bad item, and ValueError naming the text and character position
    of anything UTF-8 cannot encode (a lone surrogate).
    """
    if isinstance(texts, str):
        texts = [texts]
    elif texts is None or isinstance(texts, (bytes, bytearray, Set, Mapping)):
        why = {bytes: "decode bytes first", bytearray: "decode bytes first"}.get(
            type(texts), "pass a list (the order of the rows is the order of the texts)"
        )
        raise TypeError(
            f"{name} must be a string or a sequence of strings, got {type(texts).__name__}; {why}"
        )
    elif not hasattr(texts, "__iter__"):
        raise TypeError(
            f"{name} must be a string or a sequence of strings, got {type(texts).__name__}"
        )
    texts = list(texts)
    for i, t in enumerate(texts):
        _check_text(t, f"{name}[{start + i}]")
    return texts


def _check_text(t: Any, name: str) -> None:
    """TypeError unless `t` is a str; ValueError naming the position of a character UTF-8
    cannot encode (a lone surrogate). `name` says which input it is (`texts[3]`)."""
    if not isinstance(t, str):
        raise TypeError(f"{name} is {type(t).__name__} ({t!r:.40}), expected str")
    if not t.isascii():  # O(1): CPython knows; only other texts can hold a lone surrogate
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{name} has a character UTF-8 cannot encode at position {e.start} "
                f"({t[e.start]!r}: {e.reason}); a lone surrogate usually comes from text "
                "decoded with errors='surrogateescape': decode it as UTF-8 with "
                "errors='replace'"
            ) from None


def validate_pairs(pairs: Any) -> tuple[list[str], list[str]]:
    """Text pairs (a sequence of 2-item lists or tuples of str) as (first texts, second texts).

    Raises TypeError naming the first pair that is not a list or tuple, or whose item is not a
    str (`pairs[3][1]`); ValueError naming a pair without exactly two items or a text UTF-8
    cannot encode.
    """
    if pairs is None or isinstance(pairs, (str, bytes, bytearray, Set, Mapping)):
        raise TypeError(
            f"pairs must be a sequence of (text, text) pairs, got {type(pairs).__name__}; "
            "pass a list such as [(query, document), ...]"
        )
    if not hasattr(pairs, "__iter__"):
        raise TypeError(
            f"pairs must be a sequence of (text, text) pairs, got {type(pairs).__name__}"
        )
    firsts, seconds = [], []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple, np.ndarray)):
            raise TypeError(
                f"pairs[{i}] is {type(pair).__name__} ({pair!r:.40}), expected a (text, text) "
                "list or tuple"
            )
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] has {len(pair)} items, expected 2 (text, text)")
        for j, t in enumerate(pair):
            _check_text(t, f"pairs[{i}][{j}]")
        firsts.append(pair[0])
        seconds.append(pair[1])
    return firsts, seconds


def _has_lowercase(normalizer: Any) -> bool:
    if normalizer is None:
        return False
    if isinstance(normalizer, normalizers.Lowercase):
        return True
    if isinstance(normalizer, normalizers.Sequence):
        return any(_has_lowercase(n) for n in normalizer)
    return False


def _precompiled(normalizer: Any) -> Any:
    """The SentencePiece charsmap normalizer, alone or first found in a top-level Sequence."""
    if isinstance(normalizer, normalizers.Precompiled):
        return normalizer
    if isinstance(normalizer, normalizers.Sequence):
        return next((n for n in normalizer if isinstance(n, normalizers.Precompiled)), None)
    return None


def _wordpiece(tok: tokenizers.Tokenizer, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=cfg.get("tokenize_chinese_chars", True),
        strip_accents=cfg.get("strip_accents"),
        lowercase=cfg.get("do_lower_case", True),
    )
    return normalizer, pre_tokenizers.BertPreTokenizer()


def _byte_level_bpe(tok: tokenizers.Tokenizer, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    return None, pre_tokenizers.ByteLevel(add_prefix_space=cfg.get("add_prefix_space", False))


def _sentencepiece_unigram(tok: tokenizers.Tokenizer, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    scheme = "always" if cfg.get("add_prefix_space", True) else "never"
    split = [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace("▁", prepend_scheme=scheme)]
    return _precompiled(tok.normalizer), pre_tokenizers.Sequence(split)


# transformers 5 keeps only the vocab (and a Precompiled charsmap) of tokenizer.json for these
# classes and rebuilds (normalizer, pre-tokenizer) from the class and tokenizer_config.json's
# options; sentence-transformers tokenizes with that, so we rebuild them the same way.
_REBUILDS: dict[str, Callable[[tokenizers.Tokenizer, Mapping[str, Any]], tuple[Any, Any]]] = {
    **dict.fromkeys(
        ("BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "MPNetTokenizer"), _wordpiece
    ),
    **dict.fromkeys(("RobertaTokenizer", "BartTokenizer", "LongformerTokenizer"), _byte_level_bpe),
    "XLMRobertaTokenizer": _sentencepiece_unigram,
}
# The class AutoTokenizer picks when tokenizer_config.json and config.json name none.
_MODEL_TYPE_CLASS = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "mpnet": "MPNetTokenizer",
    "roberta": "RobertaTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
}
# The classes whose `model_input_names` include token_type_ids (the others, generic ones
# included, return none and the model sees zeros), unless tokenizer_config.json lists its own.
_TYPE_ID_CLASSES = frozenset({"BertTokenizer"})
# Generic classes load tokenizer.json as written; so do model types whose named class transformers
# overrides with the generic one (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS).
_AS_WRITTEN_CLASSES = frozenset({"PreTrainedTokenizer", "TokenizersBackend"})
_AS_WRITTEN_MODEL_TYPES = frozenset({"modernbert"})


def transformers_tokenizer_class(
    tokenizer_config: Mapping[str, Any], model_config: Mapping[str, Any]
) -> str | None:
    """The tokenizer class `AutoTokenizer` instantiates (its "Fast" alias folded), or None when it
    uses tokenizer.json as written."""
    model_type = model_config.get("model_type")
    if model_type in _AS_WRITTEN_MODEL_TYPES:
        return None
    name = (
        tokenizer_config.get("tokenizer_class")
        or model_config.get("tokenizer_class")
        or _MODEL_TYPE_CLASS.get(model_type)
    )
    name = name.removesuffix("Fast") if isinstance(name, str) else None
    return None if name in _AS_WRITTEN_CLASSES else name


def rebuild_as_transformers(
    tokenizer: tokenizers.Tokenizer, tokenizer_class: str | None, options: Mapping[str, Any]
) -> None:
    """Set `tokenizer`'s normalizer and pre-tokenizer (in place) as transformers 5 rebuilds them
    for `tokenizer_class` with tokenizer_config.json's `options`; a no-op for None."""
    if tokenizer_class is None:
        return
    rebuild = _REBUILDS.get(tokenizer_class)
    if rebuild is None:
        warnings.warn(
            f"tokenizer class {tokenizer_class!r}: transformers may rebuild parts of this "
            "tokenizer that ferris-jax takes from tokenizer.json as written, so token ids can "
            "differ from sentence-transformers' for some texts",
            stacklevel=3,
        )
        return
    tokenizer.normalizer, tokenizer.pre_tokenizer = rebuild(tokenizer, options)


# A text longer than max_seq_length * _PREFIX_CHARS_PER_TOKEN characters (English text has 4-5
# characters per token) is first tokenized from a prefix cut at whitespace. If that prefix
# already overflows max_seq_length by _PREFIX_MARGIN tokens, its truncated tokens are the whole
# text's (the pre-tokenizer splits at whitespace, so no token crosses the cut), and the rest of a
# long document is never tokenized; otherwise the whole text is tokenized.
_PREFIX_CHARS_PER_TOKEN = 6
_PREFIX_MARGIN = 16
_WHITESPACE = (" ", "\n", "\t", "\r")


def _splits_at_whitespace(tokenizer: tokenizers.Tokenizer) -> bool:
    """Whether no pre-tokenized piece ever spans a space, newline or tab."""
    pre = tokenizer.pre_tokenizer
    try:
        pieces = [p for p, _ in pre.pre_tokenize_str("ab cd\nef\tgh")] if pre else []
    except Exception:  # a pre-tokenizer that cannot run alone: take no shortcut
        return False
    words = ("ab", "cd", "ef", "gh")
    return all(any(w in p for p in pieces) for w in words) and all(
        sum(w in p for w in words) <= 1 for p in pieces
    )


FAST_TOKENIZER_ENV = "FERRIS_JAX_FAST_TOKENIZER"  # off (0/false/no/off): `tokenizers`
# Entries of nanotoken's per-thread word cache, where it is still at nanotoken's own default
# (1M per level, which grows with a corpus).
FAST_TOKENIZER_CACHE_ENTRIES = 1 << 16
_NANOTOKEN_DEFAULT_CACHE_ENTRIES = 1 << 20
_forked_child = False


def _mark_forked_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked_child)


def _may_use_threads() -> bool:
    """Whether the fast tokenizer may use its thread pool: not in a forked child (a pool made
    before the fork has no threads there) nor in a worker process (one pool per core each)."""
    return not _forked_child and multiprocessing.parent_process() is None


@functools.cache
def _probe_texts() -> tuple[str, ...]:
    """Texts on which a fast tokenizer must give `tokenizers`' ids before it is used: every
    code point of the Basic Multilingual Plane outside the surrogates and a sample above it
    (normalization, accents, CJK, control and zero-width characters, casing), words past
    WordPiece's 100-character limit, special tokens written in text, and texts long enough
    to be truncated."""
    points = [c for c in range(0x10000) if not 0xD800 <= c < 0xE000]
    points += range(0x10000, 0x110000, 101)
    blocks = ["".join(map(chr, points[i : i + 48])) for i in range(0, len(points), 48)]
    spaced = [" ".join(map(chr, points[i : i + 24])) for i in range(0, 0x3000, 24)]
    cases = [
        "",
        " ",
        "\t\n\r\u3000\u00a0",
        "Hello, World! It's a café in Ångström; naïve coöperation.",
        "cafe\u0301 re\u0301sume\u0301 \ufeffBOM zero\u200bwidth soft\u00adhyphen",
        "ΣΊΣΥΦΟΣ ὈΔΥΣΣΕΎΣ İstanbul ǅemal ß ﬁ ＦＵＬＬＷＩＤＴＨ ①②③",
        "我们在北京 東京タワー 한국어 文字 mixed中文and English",
        "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷 keycap 1️⃣",
        "[CLS] [SEP] [MASK] [PAD] [UNK] <s> </s> <pad> inside text",
        "¿three? ¡four! «five» — six… (seven) [eight] {nine} 'ten' \"eleven\"",
        "x" * 99 + " " + "y" * 100 + " " + "z" * 101 + " " + "é" * 150,
        "del\x7fchar Treasury\x12s bell\x07 nul\x00 esc\x1b[0m",
        "a.b,c;d:e!f?g-h_i/j\\k|l@m#n$o%p^q&r*s(t)u+v=w~x`y",
        "http://example.com/path?q=1&r=two#frag user@example.org 3.14159 1,000,000",
    ]
    words = "the quick brown fox jumps over the lazy dog and keeps running".split()
    long = [" ".join(words * 60), "-".join(words * 60), "word" * 2000]
    return (*cases, *blocks, *spaced, *long)


def _fast_wordpiece(tokenizer: tokenizers.Tokenizer) -> tuple[Any | None, str]:
    """nanotoken's WordPiece tokenizer built from `tokenizer`'s JSON, or None; and why."""
    if not env_flag(FAST_TOKENIZER_ENV, default=True):
        return None, f"${FAST_TOKENIZER_ENV}={os.environ[FAST_TOKENIZER_ENV]}"
    try:
        import nanotoken
    except ImportError as error:
        return None, (
            f"nanotoken cannot be imported ({error}); "
            'pip install "ferris-jax[fast-tokenizer]" for the fast WordPiece path'
        )
    try:
        fast = nanotoken.WordPieceTokenizer.from_json(tokenizer.to_str())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # UnsupportedTokenizerError (BPE, Unigram, ...); a Rust panic
        return None, f"nanotoken cannot run this tokenizer ({type(error).__name__}: {error})"
    if len(fast.suffix_ids) != 1:
        return None, "truncation is emulated for one closing special token only"
    if nanotoken.get_cache_entries() == _NANOTOKEN_DEFAULT_CACHE_ENTRIES:
        nanotoken.set_cache_entries(FAST_TOKENIZER_CACHE_ENTRIES)
    return fast, "nanotoken"


# Our own copy of each tokenizer without truncation or padding, made once per tokenizer.
_UNTRUNCATED: weakref.WeakKeyDictionary[tokenizers.Tokenizer, tokenizers.Tokenizer] = (
    weakref.WeakKeyDictionary()
)


def untruncated(tokenizer: TextTokenizer | tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """`tokenizer`'s `tokenizers.Tokenizer`, or a copy of it without truncation and padding."""
    raw = tokenizer.tokenizer if isinstance(tokenizer, TextTokenizer) else tokenizer
    if not isinstance(raw, tokenizers.Tokenizer):
        raise TypeError(
            "tokenizer must be a ferris_jax TextTokenizer (enc.tokenizer) or a "
            f"tokenizers.Tokenizer, got {type(tokenizer).__name__}"
        )
    if raw.truncation is None and raw.padding is None:
        return raw
    copy = _UNTRUNCATED.get(raw)
    if copy is None:
        copy = tokenizers.Tokenizer.from_str(raw.to_str())
        copy.no_truncation()
        copy.no_padding()
        _UNTRUNCATED[raw] = copy
    return copy


def count_tokens(
    tokenizer: TextTokenizer | tokenizers.Tokenizer,
    texts: list[str],
    *,
    add_special_tokens: bool = True,
) -> np.ndarray:
    """The tokens of each text, not truncated (int64 `[len(texts)]`): through the fast path
    where a `TextTokenizer` has one, else `tokenizers` without computing offsets."""
    if not texts:
        return np.zeros(0, np.int64)
    fast = tokenizer._fast if isinstance(tokenizer, TextTokenizer) else None
    if fast is not None:
        _, offsets = fast.encode_batch(
            texts,
            add_special_tokens=add_special_tokens,
            max_length=None,
            parallel=len(texts) > 1 and _may_use_threads(),
        )
        return np.diff(offsets)
    encodings = untruncated(tokenizer).encode_batch_fast(
        texts, add_special_tokens=add_special_tokens
    )
    return np.fromiter(map(len, encodings), np.int64, count=len(encodings))


class TextTokenizer:
    """A `tokenizers.Tokenizer` set up as sentence-transformers calls it: the pipeline
    transformers 5 builds for `tokenizer_class` (see `transformers_tokenizer_class`), truncation at
    `max_seq_length` (special tokens included), no padding (we pad to bucket shapes).

    `fast_path` names the faster implementation in use ("nanotoken") or is None;
    `fast_path_reason` says why not, or what the exactness probe checked.
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        *,
        max_seq_length: int,
        pad_token_id: int,
        do_lower_case: bool = False,
        tokenizer_class: str | None = None,
        tokenizer_options: Mapping[str, Any] | None = None,
    ):
        tokenizer = tokenizers.Tokenizer.from_str(tokenizer.to_str())  # our own copy to configure
        rebuild_as_transformers(tokenizer, tokenizer_class, tokenizer_options or {})
        tokenizer.no_padding()
        if do_lower_case and not _has_lowercase(tokenizer.normalizer):
            # sentence-transformers prepends Lowercase to the normalizer rather than lowering text.
            rest = [tokenizer.normalizer] if tokenizer.normalizer is not None else []
            tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), *rest])
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.special_ids = frozenset(
            i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special
        )
        self._splits_at_whitespace = _splits_at_whitespace(tokenizer)
        self.set_max_seq_length(max_seq_length)
        self._num_special = tokenizer.num_special_tokens_to_add(is_pair=False)
        # Type ids of a single text come from the post-processor's template (one per part);
        # when the template gives every part 0 we skip reading them.
        self._all_types_zero = not any(tokenizer.encode("a b").type_ids)
        # Whether transformers passes the model the type ids of a pair (its model_input_names).
        names = (tokenizer_options or {}).get("model_input_names")
        self.returns_type_ids = (
            "token_type_ids" in names
            if isinstance(names, (list, tuple))
            else tokenizer_class in _TYPE_ID_CLASSES
        )
        self._set_up_fast_path()

    @property
    def fast_path(self) -> str | None:
        """The fast WordPiece implementation in use ("nanotoken"), or None (see
        `fast_path_reason`)."""
        return "nanotoken" if self._fast is not None else None

    def _set_up_fast_path(self) -> None:
        self._fast, self.fast_path_reason = _fast_wordpiece(self.tokenizer)
        if self._fast is not None and not self._all_types_zero:
            self._fast, self.fast_path_reason = None, "its single-text type ids are not all 0"
        if self._fast is not None:
            self._check_fast_path()

    def _check_fast_path(self) -> None:
        """Keep the fast path only if it gives `tokenizers`' ids on the probe texts, whole
        (not truncated), with the tokenizer's own added tokens among them."""
        added = [t.content for t in self.tokenizer.get_added_tokens_decoder().values()]
        probe = [*_probe_texts(), " ".join(added), "".join(added)]
        fast_ids, offsets = self._fast.encode_batch(
            probe, add_special_tokens=True, max_length=None, parallel=_may_use_threads()
        )
        self.tokenizer.no_truncation()
        try:
            want = self._encode_batch(probe)
        finally:
            self.set_max_seq_length(self.max_seq_length)  # truncation back on
        for i, encoding in enumerate(want):
            if encoding.ids != fast_ids[offsets[i] : offsets[i + 1]].tolist():
                self._drop_fast_path(f"its ids differ from tokenizers' on probe text {i}", probe[i])
                return
        self._check_fast_truncation()
        if self._fast is not None:
            self.fast_path_reason = (
                f"nanotoken: same ids as tokenizers on {len(probe)} probe texts, truncation at "
                f"{self.max_seq_length} checked"
            )

    def _check_fast_truncation(self) -> None:
        """Keep the fast path only if it truncates as `tokenizers` does at max_seq_length."""
        limit = self.max_seq_length
        words = "the quick brown fox jumps over the lazy dog".split()
        texts = [
            " ".join(words * (limit // 8 + 2)),  # longer than the limit
            " ".join(words * (limit // 9)),  # about the limit
            *(" ".join(["word"] * n) for n in range(max(limit - 4, 0), limit + 2)),
        ]
        want, got = self._encode_tokenizers(texts), self._encode_fast(texts)
        for i, (a, b) in enumerate(zip(want.ids_per_text(), got.ids_per_text(), strict=True)):
            if a != b or want.truncated[i] != got.truncated[i]:
                self._drop_fast_path(f"it truncates otherwise at {limit} tokens", texts[i])
                return

    def _drop_fast_path(self, why: str, text: str) -> None:
        self._fast = None
        self.fast_path_reason = f"nanotoken not used: {why} ({text!r:.60})"
        warnings.warn(
            f"ferris-jax: {self.fast_path_reason}; tokenizing with tokenizers", stacklevel=4
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fast": None}  # a Rust object: rebuilt and checked on load

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_up_fast_path()

    def set_max_seq_length(self, max_seq_length: int) -> None:
        """Truncate at `max_seq_length` tokens (special tokens included) from now on."""
        self.tokenizer.enable_truncation(max_length=max_seq_length, strategy="longest_first")
        changed = max_seq_length != getattr(self, "max_seq_length", max_seq_length)
        self.max_seq_length = max_seq_length
        self._prefix_chars = (
            max_seq_length * _PREFIX_CHARS_PER_TOKEN if self._splits_at_whitespace else None
        )
        if changed and getattr(self, "_fast", None) is not None:
            self._check_fast_truncation()

    def _overflows_by_margin(self, encoding: tokenizers.Encoding) -> bool:
        overflow = encoding.overflowing
        return bool(overflow) and len(overflow[0].ids) - self._num_special >= _PREFIX_MARGIN

    def _encode_batch(self, texts: list[str]) -> list[tokenizers.Encoding]:
        if len(texts) == 1:  # one text: skip waking the tokenizer's thread pool (latency path)
            return [self.tokenizer.encode(texts[0], add_special_tokens=True)]
        # encode_batch_fast: the same ids without computing character offsets.
        return self.tokenizer.encode_batch_fast(texts, add_special_tokens=True)

    def encode(self, texts: list[str]) -> Tokenized:
        """Token ids of each text (batched in Rust), truncated to max_seq_length."""
        if self._fast is not None:
            return self._encode_fast(texts)
        return self._encode_tokenizers(texts)

    def _encode_fast(self, texts: list[str]) -> Tokenized:
        # One token past the limit: a text that reaches it was truncated; dropping its last
        # content token gives the ids truncation at max_seq_length gives.
        limit = self.max_seq_length
        ids, offsets = self._fast.encode_batch(
            texts,
            add_special_tokens=True,
            max_length=limit + 1,
            parallel=len(texts) > 1 and _may_use_threads(),
        )
        lengths = np.diff(offsets).astype(np.int32)
        truncated = lengths > limit
        if truncated.any():
            keep = np.ones(ids.size, bool)
            keep[offsets[:-1][truncated] + (limit - 1)] = False
            ids = ids[keep]
            lengths -= truncated
        return Tokenized(
            ids=ids.astype(np.int32),
            type_ids=None,
            starts=np.cumsum(lengths, dtype=np.int64) - lengths,
            lengths=lengths,
            truncated=truncated,
        )

    def _encode_tokenizers(self, texts: list[str]) -> Tokenized:
        limit, parts, cut_rows = self._prefix_chars, texts, []
        if limit is not None and any(len(t) > limit for t in texts):
            parts = list(texts)
            for i, text in enumerate(texts):
                cut = max(text.rfind(c, 0, limit) for c in _WHITESPACE) if len(text) > limit else 0
                if cut > 0:
                    parts[i] = text[:cut]
                    cut_rows.append(i)
        encodings = self._encode_batch(parts)
        redo = [i for i in cut_rows if not self._overflows_by_margin(encodings[i])]
        if redo:  # the prefix was too short to decide: tokenize those texts whole
            whole = self._encode_batch([texts[i] for i in redo])
            for i, encoding in zip(redo, whole, strict=True):
                encodings[i] = encoding
        n = len(encodings)
        lengths = np.fromiter(map(len, encodings), dtype=np.int32, count=n)
        total = int(lengths.sum())

        def flat(field: str) -> np.ndarray:
            values = itertools.chain.from_iterable(getattr(e, field) for e in encodings)
            return np.fromiter(values, dtype=np.int32, count=total)

        return Tokenized(
            ids=flat("ids"),
            type_ids=None if self._all_types_zero else flat("type_ids"),
            starts=np.cumsum(lengths, dtype=np.int64) - lengths,
            lengths=lengths,
            truncated=np.fromiter((len(e.overflowing) > 0 for e in encodings), bool, count=n),
        )

    def encode_pairs(self, firsts: list[str], seconds: list[str]) -> Tokenized:
        """Token ids of each pair as transformers' `tokenizer(firsts, seconds, truncation=True)`
        gives them: the post-processor's pair template, the pair cut to max_seq_length tokens
        by `longest_first` (tokens taken from the longer text first), and the template's token
        type ids where transformers returns them (`returns_type_ids`; else None: zeros)."""
        encodings = (
            self.tokenizer.encode_batch_fast(list(zip(firsts, seconds, strict=True)))
            if firsts
            else []
        )
        n = len(encodings)
        lengths = np.fromiter(map(len, encodings), dtype=np.int32, count=n)

        def flat(field: str) -> np.ndarray:
            values = itertools.chain.from_iterable(getattr(e, field) for e in encodings)
            return np.fromiter(values, dtype=np.int32, count=int(lengths.sum()))

        return Tokenized(
            ids=flat("ids"),
            type_ids=flat("type_ids") if self.returns_type_ids else None,
            starts=np.cumsum(lengths, dtype=np.int64) - lengths,
            lengths=lengths,
            truncated=np.fromiter((len(e.overflowing) > 0 for e in encodings), bool, count=n),
        )

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt occupies at the start of a text, [CLS] included and a final special
        token (the [SEP] of the prompt alone) excluded, as sentence-transformers counts it."""
        if not prompt:
            return 0
        ids = self.tokenizer.encode(prompt).ids
        return len(ids) - 1 if ids and ids[-1] in self.special_ids else len(ids)
