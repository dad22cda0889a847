"""Random-weight MPNet checkpoints written by transformers itself, with an MPNet tokenizer."""

from __future__ import annotations

from pathlib import Path

from conftest import WORDS

# all-mpnet-base-v2's vocabulary starts with these four; BERT's vocabulary ([UNK] ...) follows
# and <mask> comes last.
MPNET_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def make_mpnet_tokenizer_files(
    directory: Path,
    *,
    model_max_length: int = 512,
    lowercase: bool = True,
    post_processor: str = "template",
) -> int:
    """A WordPiece MPNet tokenizer built with `tokenizers`, saved through MPNetTokenizerFast.

    `post_processor="template"` writes the TemplateProcessing `<s> $A </s>` that
    all-mpnet-base-v2's tokenizer.json holds; "roberta" keeps the RobertaProcessing that
    transformers 5 writes for MPNet. Returns the vocabulary size.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import MPNetTokenizerFast

    vocab = [*MPNET_SPECIALS, "[UNK]", *WORDS]
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?:-'<>/" if c not in vocab]
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += ["<mask>"]
    ids = {w: i for i, w in enumerate(vocab)}
    template = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:1 </s>:1",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = template
    tok.decoder = decoders.WordPiece(prefix="##")
    # MPNet's defaults: <s> cls/bos, </s> sep/eos, <pad>, <mask> (lstrip); unk as in
    # all-mpnet-base-v2's tokenizer_config.json.
    fast = MPNetTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        do_lower_case=lowercase,
        model_max_length=model_max_length,
    )
    if post_processor == "template":  # MPNetTokenizer's __init__ replaced it
        fast.backend_tokenizer.post_processor = template
    elif post_processor != "roberta":
        raise ValueError(f"post_processor must be 'template' or 'roberta', got {post_processor!r}")
    fast.save_pretrained(str(directory))
    return len(vocab)


def make_mpnet_checkpoint(
    directory: Path,
    seed: int = 0,
    *,
    tokenizer_max_length: int | None = None,
    post_processor: str = "template",
    **config,
) -> Path:
    """Save a random-weight transformers MPNetModel (safetensors) plus its tokenizer.

    The tokenizer's model_max_length is `max_position_embeddings - 2` (positions start at 2),
    as in real MPNet checkpoints, unless `tokenizer_max_length` says otherwise.
    """
    import torch
    from transformers import MPNetConfig, MPNetModel

    directory.mkdir(parents=True, exist_ok=True)
    defaults = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        relative_attention_num_buckets=32,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    defaults.update(config)
    n_vocab = make_mpnet_tokenizer_files(
        directory,
        model_max_length=tokenizer_max_length or defaults["max_position_embeddings"] - 2,
        post_processor=post_processor,
    )
    defaults.setdefault("vocab_size", n_vocab)
    torch.manual_seed(seed)
    model = MPNetModel(MPNetConfig(**defaults)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Random init leaves LayerNorms at identity; perturb them so a dropped one shows.
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        # std 0.02 would hide a wrong bucket; make the relative position bias matter.
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory
