"""Random-weight RoBERTa and XLM-RoBERTa checkpoints written by transformers, with tokenizers of
the real kinds (byte-level BPE for RoBERTa, SentencePiece Unigram for XLM-R)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import SENTENCES, WORDS

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq order: pad id 1, as in the real models


def make_roberta_tokenizer_files(directory: Path, model_max_length: int) -> int:
    """A byte-level BPE trained on the test corpus, saved through RobertaTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=[*SPECIALS, "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*SENTENCES, " ".join(WORDS)], trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)
    fast.save_pretrained(str(directory))
    return tok.get_vocab_size()


def make_xlm_roberta_tokenizer_files(directory: Path, model_max_length: int) -> int:
    """A SentencePiece-style Unigram tokenizer (pieces with log-prob scores, "▁" word starts),
    built as XLMRobertaTokenizerFast builds its backend and saved through it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?:-'"
    pieces = [(s, 0.0) for s in SPECIALS]
    pieces += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    pieces += [(w[:3], -5.0) for w in WORDS if len(w) > 4]  # subword pieces to split words on
    pieces += [("▁", -4.0)] + [(c, -7.0) for c in chars] + [("▁" + c, -6.5) for c in chars]
    pieces = list(dict((p, s) for p, s in reversed(pieces)).items())[::-1]  # first score wins
    pieces.append(("<mask>", 0.0))  # last, as in xlm-roberta-base
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace("▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace("▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length)
    fast.save_pretrained(str(directory))
    return len(pieces)


# Text the SentencePiece model is trained on beyond the test corpus: scripts, accents, symbols.
MULTILINGUAL = [
    "Ünïcödé café naïve façade über straße",
    "emoji 😀 and 中文 text, 日本語のテキスト",
    "русский текст и ελληνικά",
    "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ １２３",
]


def make_xlm_roberta_hub_tokenizer_files(
    directory: Path, model_max_length: int, tokenizer_class: str | None = "XLMRobertaTokenizer"
) -> int:
    """A SentencePiece Unigram trained by the sentencepiece package (nmt_nfkc normalization),
    written in the layout transformers 4 gave xlm-roberta-base and multilingual-e5: normalizer
    Sequence[Precompiled(charsmap), Replace(" {2,}", " ")], pre-tokenizer Metaspace, fairseq ids.

    `tokenizer_class=None` writes xlm-roberta-base's tokenizer_config.json, which names no class.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    directory.mkdir(parents=True, exist_ok=True)
    proto_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([*SENTENCES, *MULTILINGUAL, " ".join(WORDS)] * 4),
        model_writer=proto_bytes,
        model_type="unigram",
        vocab_size=400,
        hard_vocab_limit=False,
        character_coverage=1.0,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
        num_threads=1,
    )
    proto = sentencepiece_model_pb2.ModelProto.FromString(proto_bytes.getvalue())
    assert proto.normalizer_spec.name == "nmt_nfkc"
    # XLMRobertaConverter's vocab: fairseq's four specials, the pieces, then <mask>.
    vocab = [(s, 0.0) for s in SPECIALS]
    vocab += [(p.piece, p.score) for p in proto.pieces if p.piece not in SPECIALS]
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace("▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    specials = [AddedToken(s, special=True, normalized=False) for s in SPECIALS]
    tok.add_special_tokens([*specials, AddedToken("<mask>", lstrip=True, special=True)])
    tok.save(str(directory / "tokenizer.json"))

    named = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>")
    named.update(pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
    flags = dict(normalized=False, rstrip=False, single_word=False, special=True)
    added = {
        str(tok.token_to_id(c)): dict(content=c, lstrip=c == "<mask>", **flags)
        for c in [*SPECIALS, "<mask>"]
    }
    config = {"model_max_length": model_max_length}
    if tokenizer_class is not None:  # as transformers 4.3x saved multilingual-e5's
        config.update(added_tokens_decoder=added, tokenizer_class=tokenizer_class, **named)
        (directory / "special_tokens_map.json").write_text(json.dumps(named, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def _make_checkpoint(
    directory: Path, seed: int, model_type: str, config: dict, make_tokens
) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    directory.mkdir(parents=True, exist_ok=True)
    positions = config.get("max_position_embeddings", 66)
    # Positions start after pad_token_id (1), so 2 of the table's rows hold no token.
    n_vocab = make_tokens(directory, model_max_length=positions - 2)
    defaults = dict(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=positions,
        type_vocab_size=1,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    defaults.update(config)
    torch.manual_seed(seed)
    hf_config = AutoConfig.for_model(model_type, **defaults)
    model = AutoModel.from_config(hf_config, attn_implementation="eager").eval()
    # Random init leaves LayerNorms at identity; perturb them so a dropped parameter shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def make_roberta_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers RobertaModel (safetensors) plus a byte-level BPE."""
    return _make_checkpoint(directory, seed, "roberta", config, make_roberta_tokenizer_files)


def make_xlm_roberta_checkpoint(
    directory: Path, seed: int = 0, hub_layout: bool = False, **config
) -> Path:
    """Save a random-weight transformers XLMRobertaModel plus a SentencePiece Unigram (a trained
    one in the hub's tokenizer.json layout if `hub_layout`)."""
    make_tokens = (
        make_xlm_roberta_hub_tokenizer_files if hub_layout else make_xlm_roberta_tokenizer_files
    )
    return _make_checkpoint(directory, seed, "xlm-roberta", config, make_tokens)
