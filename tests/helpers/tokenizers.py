"""Tokenizer files of every family's real kind, built with `tokenizers` and saved through the
transformers class the hub checkpoints name. Each builder returns the vocabulary size
(ModernBERT's, its special token ids too)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from helpers.texts import SENTENCES, WORDS

# fairseq order (RoBERTa, XLM-R, MPNet's first four): pad id 1, as in the real models.
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# ModernBERT's special tokens come after the learned vocabulary ([PAD] is not 0).
MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def _save_with_bracket_specials(tok, directory: Path, **kwargs) -> None:
    """Give `tok` BERT's `[CLS] $A [SEP]` template and special tokens ([UNK] [PAD] [CLS] [SEP]
    [MASK], wherever they sit in its vocabulary); save it as transformers saves it."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        **kwargs,
    )
    fast.save_pretrained(str(directory))


def make_bert_tokenizer_files(directory: Path, lowercase: bool = True) -> int:
    """A WordPiece BERT tokenizer built with `tokenizers`, saved as transformers saves it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?:-'" if c not in vocab]
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    _save_with_bracket_specials(tok, directory, model_max_length=512)
    return len(vocab)


def make_distilbert_tokenizer_files(directory: Path, model_max_length: int) -> int:
    """The BERT WordPiece above, resaved through DistilBertTokenizerFast."""
    import tokenizers
    from transformers import DistilBertTokenizerFast

    n_vocab = make_bert_tokenizer_files(directory)
    wordpiece = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    fast = DistilBertTokenizerFast(
        tokenizer_object=wordpiece, do_lower_case=True, model_max_length=model_max_length
    )
    fast.save_pretrained(str(directory))
    return n_vocab


def make_roberta_tokenizer_files(directory: Path, model_max_length: int) -> int:
    """A byte-level BPE trained on the test corpus, saved through RobertaTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=[*FAIRSEQ_SPECIALS, "<mask>"],
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
    pieces = [(s, 0.0) for s in FAIRSEQ_SPECIALS]
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
    vocab = [(s, 0.0) for s in FAIRSEQ_SPECIALS]
    vocab += [(p.piece, p.score) for p in proto.pieces if p.piece not in FAIRSEQ_SPECIALS]
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
    specials = [AddedToken(s, special=True, normalized=False) for s in FAIRSEQ_SPECIALS]
    tok.add_special_tokens([*specials, AddedToken("<mask>", lstrip=True, special=True)])
    tok.save(str(directory / "tokenizer.json"))

    named = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>")
    named.update(pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
    flags = dict(normalized=False, rstrip=False, single_word=False, special=True)
    added = {
        str(tok.token_to_id(c)): dict(content=c, lstrip=c == "<mask>", **flags)
        for c in [*FAIRSEQ_SPECIALS, "<mask>"]
    }
    config = {"model_max_length": model_max_length}
    if tokenizer_class is not None:  # as transformers 4.3x saved multilingual-e5's
        config.update(added_tokens_decoder=added, tokenizer_class=tokenizer_class, **named)
        (directory / "special_tokens_map.json").write_text(json.dumps(named, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def make_mpnet_tokenizer_files(
    directory: Path,
    *,
    model_max_length: int = 512,
    lowercase: bool = True,
    post_processor: str = "template",
) -> int:
    """A WordPiece MPNet tokenizer built with `tokenizers`, saved through MPNetTokenizerFast.

    all-mpnet-base-v2's vocabulary starts with the fairseq four; BERT's vocabulary ([UNK] ...)
    follows and <mask> comes last. `post_processor="template"` writes the TemplateProcessing
    `<s> $A </s>` that all-mpnet-base-v2's tokenizer.json holds; "roberta" keeps the
    RobertaProcessing that transformers 5 writes for MPNet.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import MPNetTokenizerFast

    vocab = [*FAIRSEQ_SPECIALS, "[UNK]", *WORDS]
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


def make_modernbert_tokenizer_files(directory: Path, vocab_size: int = 400) -> dict[str, int]:
    """Train a tiny byte-level BPE, save it as transformers saves ModernBERT's tokenizer.json;
    returns the special token ids (plus "vocab_size": the tokenizer's size)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

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
        [AddedToken(t, special=True, lstrip=t == "[MASK]") for t in MODERNBERT_SPECIALS]
    )
    _save_with_bracket_specials(
        tok, directory, model_max_length=8192, model_input_names=["input_ids", "attention_mask"]
    )
    ids = {t: tok.token_to_id(t) for t in MODERNBERT_SPECIALS}
    return {**ids, "vocab_size": tok.get_vocab_size(with_added_tokens=True)}
