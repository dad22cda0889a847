"""Random-weight ModernBERT checkpoints written by transformers itself, with a byte-level BPE
tokenizer laid out like ModernBERT's (special tokens after the learned vocabulary)."""

from __future__ import annotations

from pathlib import Path

from conftest import SENTENCES, WORDS

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def make_modernbert_tokenizer_files(directory: Path, vocab_size: int = 400) -> dict[str, int]:
    """Train a tiny byte-level BPE, save it as transformers saves ModernBERT's tokenizer.json;
    returns the special token ids (plus "vocab_size": the tokenizer's size)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([" ".join(WORDS), *SENTENCES, *WORDS], trainer=trainer)
    # As in ModernBERT, the special tokens come after the learned vocabulary ([PAD] is not 0).
    # ModernBERT's [MASK] swallows the space before it (lstrip).
    tok.add_special_tokens(
        [AddedToken(t, special=True, lstrip=t == "[MASK]") for t in SPECIAL_TOKENS]
    )
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=8192,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(str(directory))
    return {**ids, "vocab_size": tok.get_vocab_size(with_added_tokens=True)}


def make_modernbert_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers ModernBertModel (safetensors) plus its tokenizer.

    `config` takes ModernBertConfig arguments, including the hub's older spellings
    (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`)."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    directory.mkdir(parents=True, exist_ok=True)
    ids = make_modernbert_tokenizer_files(directory)
    defaults = dict(
        vocab_size=ids["vocab_size"],
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
        global_attn_every_n_layers=3,
        local_attention=8,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
        hidden_activation="gelu",
        norm_eps=1e-5,
        # The default 0.02 makes attention near-uniform: rotary positions and the window would
        # change the output by ~1e-5 only, below the parity tolerance. 0.2 makes them count.
        initializer_range=0.2,
        pad_token_id=ids["[PAD]"],
        bos_token_id=ids["[CLS]"],
        cls_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        sep_token_id=ids["[SEP]"],
        attn_implementation="eager",
    )
    defaults.update(config)
    torch.manual_seed(seed)
    model = ModernBertModel(ModernBertConfig(**defaults)).eval()
    # Random init leaves norms at identity and biases at zero; perturb them so a dropped
    # parameter shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory
