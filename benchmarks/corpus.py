"""Benchmark corpora of real English text that every machine with our venv already has.

Texts come from the docstrings and `.md`/`.rst`/`.txt` files of installed packages (numpy,
torch, jax, transformers, ...): technical prose, cut into query-like short lines, single
sentences and paragraphs. `build(kind, n)` gives one corpus per kind: "short", "sentence",
"passage" (one paragraph), "long" (consecutive paragraphs joined past 512 tokens, so every text
is truncated at max_seq_length), "words" (one to three words of a short line: titles and tags,
3 to 8 tokens with the special ones), "empty" (empty strings: two tokens) and "mix"
(`build_corpus`, the shuffled mix that BENCHMARKS.md measured). The selection is deterministic
for a given seed and set of installed package versions.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import random
import re
from pathlib import Path

PACKAGES = ("numpy", "torch", "jax", "flax", "transformers", "sentence_transformers", "tokenizers")
FILES_PER_PACKAGE = 150
# Fractions of short lines, sentences and paragraphs in the corpus; a quarter of the paragraphs
# are two to four joined together, so that some texts exceed max_seq_length.
MIX = {"short": 0.3, "sentence": 0.4, "paragraph": 0.3}
LONG_FRACTION = 0.25
KINDS = ("short", "sentence", "passage", "long", "words", "empty", "mix")
# A "long" text joins consecutive paragraphs until it has this many words (about 1.3 tokens
# each with a WordPiece vocabulary: past 512 tokens).
LONG_WORDS = 450

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\$ |```|\.\. |:param|:return|[-=~^*#]{3,})")


def _package_root(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _raw_texts(path: Path) -> list[str]:
    """Docstrings of a .py file, or the whole text of a doc file."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    if path.suffix != ".py":
        return [source]
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, defs)]
    return [d for d in (ast.get_docstring(n) for n in nodes) if d]


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs: blank-line separated, code/markup lines dropped, whitespace collapsed."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip() and not _CODE_LINE.match(ln)]
        para = " ".join(" ".join(lines).split())
        letters = sum(c.isalpha() for c in para)
        if len(para) >= 20 and letters > 0.6 * len(para):
            out.append(para)
    return out


@functools.lru_cache(maxsize=4)
def _pools(packages: tuple[str, ...], seed: int) -> dict[str, list[str]]:
    """Deduplicated short lines, sentences and paragraphs from a seeded sample of files."""
    rng = random.Random(seed)
    short, sentences, paragraphs = set(), set(), []
    for name in packages:
        root = _package_root(name)
        if root is None:
            continue
        files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".md", ".rst", ".txt"))
        for path in rng.sample(files, min(FILES_PER_PACKAGE, len(files))):
            for raw in _raw_texts(path):
                for para in _paragraphs(raw):
                    paragraphs.append(para)
                    for sent in _SENTENCE_END.split(para):
                        words = len(sent.split())
                        if 2 <= words <= 8:
                            short.add(sent.rstrip("."))
                        elif words > 8:
                            sentences.add(sent)
    seen, unique_paragraphs = set(), []
    for para in paragraphs:  # keep file order (so neighbours join into coherent long texts)
        if para not in seen and len(para.split()) > 20:
            seen.add(para)
            unique_paragraphs.append(para)
    return {"short": sorted(short), "sentence": sorted(sentences), "paragraph": unique_paragraphs}


def build_corpus(n: int, seed: int = 0, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """`n` texts: MIX of short lines, sentences and paragraphs, shuffled with `seed`."""
    rng = random.Random(seed)
    pools = _pools(packages, seed)
    texts = []
    for kind, fraction in MIX.items():
        pool, k = pools[kind], round(n * fraction)
        if kind != "paragraph":
            texts += rng.sample(pool, min(k, len(pool)))
            continue
        for _ in range(k):
            i = rng.randrange(len(pool))
            span = rng.randint(2, 4) if rng.random() < LONG_FRACTION else 1
            texts.append(" ".join(pool[i : i + span]))
    while len(texts) < n:  # small pools: top up with paragraphs
        texts.append(rng.choice(pools["paragraph"]))
    rng.shuffle(texts)
    return texts[:n]


def _long_texts(n: int, rng: random.Random, paragraphs: list[str]) -> list[str]:
    """`n` texts of at least LONG_WORDS words, each consecutive paragraphs from a random start."""
    texts = []
    for _ in range(n):
        i, parts, words = rng.randrange(len(paragraphs)), [], 0
        while words < LONG_WORDS:
            parts.append(paragraphs[i % len(paragraphs)])
            words += len(parts[-1].split())
            i += 1
        texts.append(" ".join(parts))
    return texts


def build(kind: str, n: int, seed: int = 0, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """`n` texts of one kind (see KINDS); "mix" is `build_corpus`."""
    if kind == "mix":
        return build_corpus(n, seed, packages)
    if kind not in KINDS:
        raise ValueError(f"corpus kind must be one of {KINDS}, got {kind!r}")
    if kind == "empty":
        return [""] * n
    rng = random.Random(seed)
    pools = _pools(packages, seed)
    if kind == "words":
        lines = rng.choices(pools["short"], k=n)
        return [" ".join(line.split()[: rng.randint(1, 3)]) for line in lines]
    if kind == "long":
        return _long_texts(n, rng, pools["paragraph"])
    pool = pools["paragraph" if kind == "passage" else kind]
    # Sample without replacement while the pool lasts, then with (a pool can be smaller than n).
    return rng.sample(pool, min(n, len(pool))) + rng.choices(pool, k=max(0, n - len(pool)))


def corpus_digest(texts: list[str]) -> str:
    """Short hash of the corpus, to tell whether two runs measured the same texts."""
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]


if __name__ == "__main__":
    for kind in KINDS:
        for t in build(kind, 3):
            print(f"{kind:>8}: {t[:150]!r}")
