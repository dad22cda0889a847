"""Random-weight checkpoints that transformers and sentence-transformers write themselves (the
references, not us, produce every file): one builder per family, each
`builder(directory, seed=0, **config) -> directory` with config in transformers' own names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers.tokenizers import (
    make_bert_tokenizer_files,
    make_distilbert_tokenizer_files,
    make_modernbert_tokenizer_files,
    make_mpnet_tokenizer_files,
    make_roberta_tokenizer_files,
    make_xlm_roberta_hub_tokenizer_files,
    make_xlm_roberta_tokenizer_files,
)

# The builders' default size (BERT, RoBERTa, XLM-R and MPNet spell it alike).
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _random_model(seed: int, make_model: Callable, perturbed: Callable[[str], bool]):
    """`make_model()` under a fixed seed, in eval mode. Random init leaves norms at identity (and
    biases at zero); the parameters `perturbed(name)` picks get noise so a dropped one shows."""
    import torch

    torch.manual_seed(seed)
    model = make_model().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if perturbed(name):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _layer_norms(name: str) -> bool:
    return "LayerNorm" in name


def _layer_norms_and_classifier(name: str) -> bool:
    return "LayerNorm" in name or name.startswith("classifier")


def make_bert_checkpoint(
    directory: Path, seed: int = 0, num_labels: int | None = None, **config
) -> Path:
    """Save a random-weight transformers BertModel (safetensors) plus its tokenizer; with
    `num_labels`, a BertForSequenceClassification (a cross-encoder) instead."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    n_vocab = make_bert_tokenizer_files(directory)
    defaults = dict(
        vocab_size=n_vocab,
        **TINY,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        attn_implementation="eager",
    )
    config = defaults | config
    if num_labels is not None:
        config["num_labels"] = num_labels
    model_class = BertModel if num_labels is None else BertForSequenceClassification
    # A cross-encoder's head gets noise too, so scores of different pairs differ by far more
    # than float32 rounding.
    perturbed = _layer_norms if num_labels is None else _layer_norms_and_classifier
    model = _random_model(seed, lambda: model_class(BertConfig(**config)), perturbed)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def make_bert_cross_encoder_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """A one-label BERT cross-encoder (a reranker's relevance score) by default."""
    return make_bert_checkpoint(directory, seed, num_labels=config.pop("num_labels", 1), **config)


def make_distilbert_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers DistilBertModel (safetensors) plus its tokenizer.

    `config` takes DistilBertConfig names (dim, n_layers, n_heads, hidden_dim, activation,
    max_position_embeddings, sinusoidal_pos_embds)."""
    from transformers import DistilBertConfig, DistilBertModel

    directory.mkdir(parents=True, exist_ok=True)
    positions = config.get("max_position_embeddings", 64)
    n_vocab = make_distilbert_tokenizer_files(directory, model_max_length=positions)
    defaults = dict(
        vocab_size=n_vocab,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=positions,
        activation="gelu",
        pad_token_id=0,
        attn_implementation="eager",
    )
    config = defaults | config
    model = _random_model(
        seed,
        lambda: DistilBertModel(DistilBertConfig(**config)),
        lambda name: "layer_norm" in name or "LayerNorm" in name,
    )
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def _make_roberta_like_checkpoint(
    directory: Path, seed: int, model_type: str, config: dict, make_tokens
) -> Path:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    positions = config.get("max_position_embeddings", 66)
    # Positions start after pad_token_id (1), so 2 of the table's rows hold no token.
    n_vocab = make_tokens(directory, model_max_length=positions - 2)
    defaults = dict(
        vocab_size=n_vocab,
        **TINY,
        max_position_embeddings=positions,
        type_vocab_size=1,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    if config.get("num_labels") is None:
        config.pop("num_labels", None)
        auto = AutoModel
    else:
        auto = AutoModelForSequenceClassification
    hf_config = AutoConfig.for_model(model_type, **(defaults | config))
    model = _random_model(
        seed,
        lambda: auto.from_config(hf_config, attn_implementation="eager"),
        _layer_norms,
    )
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def make_roberta_checkpoint(directory: Path, seed: int = 0, **config) -> Path:
    """Save a random-weight transformers RobertaModel (safetensors) plus a byte-level BPE
    (`num_labels=n`: a RobertaForSequenceClassification)."""
    return _make_roberta_like_checkpoint(
        directory, seed, "roberta", config, make_roberta_tokenizer_files
    )


def make_xlm_roberta_checkpoint(
    directory: Path, seed: int = 0, hub_layout: bool = False, **config
) -> Path:
    """Save a random-weight transformers XLMRobertaModel plus a SentencePiece Unigram (a trained
    one in the hub's tokenizer.json layout if `hub_layout`; `num_labels=n`: an
    XLMRobertaForSequenceClassification)."""
    make_tokens = (
        make_xlm_roberta_hub_tokenizer_files if hub_layout else make_xlm_roberta_tokenizer_files
    )
    return _make_roberta_like_checkpoint(directory, seed, "xlm-roberta", config, make_tokens)


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
        **TINY,
        max_position_embeddings=130,
        relative_attention_num_buckets=32,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    config = defaults | config
    n_vocab = make_mpnet_tokenizer_files(
        directory,
        model_max_length=tokenizer_max_length or config["max_position_embeddings"] - 2,
        post_processor=post_processor,
    )
    config.setdefault("vocab_size", n_vocab)
    model = _random_model(seed, lambda: MPNetModel(MPNetConfig(**config)), _layer_norms)
    with torch.no_grad():  # std 0.02 would hide a wrong bucket; make the bias matter.
        model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def make_modernbert_checkpoint(
    directory: Path, seed: int = 0, num_labels: int | None = None, **config
) -> Path:
    """Save a random-weight transformers ModernBertModel (safetensors) plus its tokenizer; with
    `num_labels`, a ModernBertForSequenceClassification.

    `config` takes ModernBertConfig arguments, including the hub's older spellings
    (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`)."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification, ModernBertModel

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
    config = defaults | config
    if num_labels is not None:
        config["num_labels"] = num_labels
    model_class = ModernBertModel if num_labels is None else ModernBertForSequenceClassification
    model = _random_model(
        seed,
        lambda: model_class(ModernBertConfig(**config)),
        lambda name: "norm" in name or name.endswith(".bias"),
    )
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
