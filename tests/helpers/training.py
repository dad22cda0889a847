"""Training references: sentence-transformers' losses and torch autograd on the same batch, their
gradients and parameters under our parameter paths, and the one tolerance parity is held to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers.data import sts_benchmark

# Parity of losses, gradients and parameters with torch (float32): each tensor within 1e-4 of
# the reference relative to the reference tensor's largest magnitude, and each loss within 1e-4
# relative.
RTOL = 1e-4


def sts_pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """n paraphrase pairs (score >= 4) of STS-B train: (anchor, positive) for MNRL."""
    pairs = [(p.sentence1, p.sentence2) for p in sts_benchmark("train") if p.score >= 4.0]
    return pairs[offset : offset + n]


def sts_triplets(n: int) -> list[tuple[str, str, str]]:
    """n (anchor, positive, hard negative) triplets: the negative is a sentence of an unrelated
    STS-B train pair (score <= 1)."""
    unrelated = [p.sentence2 for p in sts_benchmark("train") if p.score <= 1.0]
    return [(a, p, unrelated[i]) for i, (a, p) in enumerate(sts_pairs(n))]


def sts_scored(n: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """n STS-B train pairs of every score, with labels score / 5 (for CoSENT)."""
    pairs = sts_benchmark("train")[:n]
    return [(p.sentence1, p.sentence2) for p in pairs], np.array(
        [p.score / 5 for p in pairs], np.float32
    )


def st_features(model, examples: Sequence[Sequence[str]]) -> list[dict]:
    """sentence-transformers' own tokenization of each column of `examples`."""
    prepare = getattr(model, "preprocess", None) or model.tokenize
    return [prepare([e[c] for e in examples]) for c in range(len(examples[0]))]


def _hf_name(torch_name: str) -> str:
    module, _, hf_name = torch_name.partition(".")
    assert module == "0", f"only the Transformer module has parameters here, got {torch_name}"
    for prefix in ("model.", "auto_model."):
        hf_name = hf_name.removeprefix(prefix)
    return hf_name


def used_parameters(model, weight_map) -> list[tuple[str, object]]:
    """(name, parameter) of a sentence-transformers model, without those sentence embeddings do
    not use (BERT's pooler, which gets no gradient)."""
    return [(n, p) for n, p in model.named_parameters() if not weight_map.is_ignored(_hf_name(n))]


def our_path(weight_map, torch_name: str) -> tuple:
    """Our parameter path of a sentence-transformers parameter name ("0.model.<hf name>")."""
    found = weight_map.lookup(_hf_name(torch_name))
    assert found is not None, f"no weight-map rule for {torch_name}"
    return found[0]


def torch_tensors(model, weight_map, *, grads: bool) -> dict[tuple, np.ndarray]:
    """Every parameter (or its gradient) of a sentence-transformers model, in our layout
    (linear weights transposed) under our parameter paths."""
    out = {}
    for name, p in used_parameters(model, weight_map):
        t = p.grad if grads else p.detach()
        assert t is not None, f"{name} got no gradient"
        path = our_path(weight_map, name)
        a = t.detach().numpy()
        out[path] = a.T if path[-1] == "kernel" else a
    return out


def flat(tree) -> dict[tuple, np.ndarray]:
    """An nnx.State (params or gradients) as {path: numpy array}."""
    from flax import nnx

    from ferris_jax._compat import variable_value

    return {tuple(p): np.asarray(variable_value(v)) for p, v in nnx.to_flat_state(tree)}


def assert_tensors_match(got: dict, want: dict, rtol: float = RTOL) -> None:
    """Same paths; each tensor within `rtol` of the reference, relative to its largest value.

    Attention key biases are measured against the largest value of all tensors instead: their
    gradient is zero in exact arithmetic (softmax ignores a constant added to every key's
    score), so both sides hold float32 round-off only, and so do the updates Adam makes of it.
    """
    assert set(got) == set(want), set(got) ^ set(want)
    largest = max(float(np.abs(ref).max()) for ref in want.values())
    bad = []
    for path, ref in want.items():
        zero_in_exact_arithmetic = tuple(path[-3:]) == ("attention", "key", "bias")
        scale = largest if zero_in_exact_arithmetic else float(np.abs(ref).max())
        err = float(np.abs(got[path] - ref).max())
        if err > rtol * scale:
            bad.append(f"{'.'.join(map(str, path))}: max error {err:.3g} vs max {scale:.3g}")
    assert not bad, "\n".join(bad)


def st_symmetric_mnrl(model, **kwargs):
    """sentence-transformers' MultipleNegativesSymmetricRankingLoss, in the form its deprecation
    message asks for (the same loss)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(
        model, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction", **kwargs
    )


def sgd_step_gradients(enc, examples, *, pack: bool, mini_batch_size: int | None, check=None):
    """One MNRL train step of `enc` (float32) on `examples` through SGD of rate 1, so that
    old - new parameters is every gradient: (loss, gradients as numpy, the new state).
    `check(step, state, batch)` runs before the step (e.g. to inspect the compiled program)."""
    import jax
    import optax

    from ferris_jax.train import make_batch
    from ferris_jax.train.losses import mnrl_loss
    from ferris_jax.train.step import init_state, train_step

    batch = make_batch(enc, examples, pack=pack, mini_batch_size=mini_batch_size)
    step = train_step(
        enc, mnrl_loss, optax.sgd(1.0), compute_dtype="float32", mini_batch_size=mini_batch_size
    )
    state = init_state(enc.params, optax.sgd(1.0), enc.placement)
    before = [np.array(x) for x in jax.tree.leaves(state.params)]  # a copy: the step donates
    if check is not None:
        check(step, state, batch)
    state, metrics = step(state, batch)
    after = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    return float(metrics["loss"]), [b - a for b, a in zip(before, after, strict=True)], state
