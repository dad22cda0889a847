"""Random-weight RoBERTa and XLM-RoBERTa checkpoints written by transformers, with tokenizers of
the real kinds (byte-level BPE for RoBERTa, SentencePiece Unigram for XLM-R)."""

from __future__ import annotations

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


def _make_checkpoint(directory: Path, seed: int, model_type: str, config: dict) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    directory.mkdir(parents=True, exist_ok=True)
    positions = config.get("max_position_embeddings", 66)
    make_tokens = (
        make_roberta_tokenizer_files
        if model_type == "roberta"
        else make_xlm_roberta_tokenizer_files
    )
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
    return _make_checkpoint(directory, seed, "roberta", config)


def make_xlm_roberta_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers XLMRobertaModel plus a SentencePiece Unigram."""
    return _make_checkpoint(directory, seed, "xlm-roberta", config)
