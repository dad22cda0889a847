"""Texts the tests feed: a small vocabulary, sentences of every length, the parity suite's
texts (every family's odd cases, a padding-heavy batch), and a varied corpus."""

from __future__ import annotations

import random

WORDS = (
    "the a an of to in and or is are was were be been it this that these those with for on at by "
    "from as not no yes quick brown fox jumps over lazy dog cat sat mat hello world sentence "
    "embedding vector model search query document passage text token jax flax torch python data "
    "science learning deep neural network attention layer norm pool mean max cls long short "
    "weather rain sun cloud music song piano guitar food pizza bread cheese city paris london "
    "tokyo river mountain sea tree flower red green blue one two three four five six seven"
).split()
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "hello world",
    "a sentence embedding model maps text to a vector",
    "paris and london are cities",
    "Music: piano, guitar and song!",
    "",
    "   ",
    "unknown-words zzz qqq 12345",
    "rain in tokyo and sun in paris " * 12,
    "one two three four five six seven " * 30,
    "deep neural network attention layer norm",
    "food pizza bread cheese",
]

# Odd whitespace, accents, scripts, emoji, and every family's special tokens written as text
# ("<pad>" is RoBERTa's and MPNet's pad id 1, which their position ids skip).
ODD_TEXTS = [
    "  leading and trailing  ",
    "tab\tand\nnewline",
    "Ünïcödé café",
    "Ünïcödé café naïve",
    "Ünïcödé façade naïve café",
    "emoji 😀 中文",
    "emoji 😀 and 中文 text",
    "emoji 😀🎉 👍🏽",
    "中文句子用于测试",
    "UPPER Case MiXeD",
    "<s> looks special </s>",
    "[MASK] a [MASK]",
    "a <pad> inside the text",
    "<mask> token </s> and <s>",
    "x <mask>y",
]
# One text filling the whole length among many short ones: most of the batch is padding.
PADDING_HEAVY = [
    "one two three four five six seven " * 40,
    *("hello", "", "a dog", "the cat sat", "x", "tokyo", "pizza and cheese"),
]
# Past every max_seq_length of the parity tests, and MPNet's bucket max_distance of 128.
LONG = "rain in tokyo and sun in paris " * 40
# What every family's tokenizer and model must agree with the references on.
PARITY_TEXTS = [*SENTENCES, *ODD_TEXTS, *PADDING_HEAVY, LONG]


def varied_texts(n: int = 300, seed: int = 0) -> list[str]:
    """Short, long (past 256 tokens), unicode, CJK, emoji, whitespace-only and empty texts."""
    rng = random.Random(seed)
    words = (
        "the model maps sentences to dense vectors for semantic search clustering and retrieval "
        "JAX compiles numerical programs XLA runs them on CPU GPU and TPU attention is all you need"
    ).split()
    specials = [
        "",
        " ",
        "   \t\n ",
        "\u00a0",
        "Ünïcödé façade naïve café coöperate",
        "Ελληνικά κείμενα",
        "Русский текст для проверки",
        "中文句子用于测试嵌入模型",
        "日本語のテキストとカタカナ",
        "한국어 문장입니다",
        "emoji 😀🎉🚀 and 👍🏽 skin tones",
        "مرحبا بالعالم",
        "עברית",
        "tab\tseparated\tvalues",
        "MiXeD CaSe And PUNCTUATION!!! ???",
        "a" * 600,
        "http://example.com/path?query=1&b=2",
        "1234567890 3.14159 -42 1e10",
        "🙂",
    ]
    texts = list(specials)
    while len(texts) < n:
        kind = rng.random()
        if kind < 0.4:
            texts.append(" ".join(rng.choices(words, k=rng.randint(1, 8))))
        elif kind < 0.75:
            texts.append(" ".join(rng.choices(words, k=rng.randint(9, 60))) + ".")
        elif kind < 0.9:
            texts.append(" ".join(rng.choices(words, k=rng.randint(200, 400))))
        else:
            texts.append(rng.choice(specials) + " " + " ".join(rng.choices(words, k=5)))
    rng.shuffle(texts)
    return texts
