"""The train step: a batch of token columns -> embeddings -> a loss -> an optax update.

`TrainBatch` is what the step takes: one padded `[B, L]` token `Column` per text column
(anchor, positive, negatives...), or all columns' texts packed several per row
(`PackedColumns`), and optional labels `[B]`; `ferris_jax.train.data` builds it from examples
(`make_batch`, `collate`). `adamw(...)` is the optimizer
transformers' Trainer builds (linear warmup and decay, no weight decay on biases and LayerNorm
weights, global-norm clipping, gradient accumulation); `train_step(enc, loss, optimizer)` is
the jitted, buffer-donating step over a `TrainState`; with `mini_batch_size` it is the cached
(GradCache) step, whose memory is that of one mini-batch while its gradients are the plain
step's. Research loops call these directly; `fit` is the loop for the common case.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ferris_jax import ops, programs
from ferris_jax._compat import register_dataclass
from ferris_jax.encoder import Encoder
from ferris_jax.errors import require_int, require_number
from ferris_jax.models import family_for, read_config
from ferris_jax.models.embedder import SentenceEmbedder
from ferris_jax.placement import Placement
from ferris_jax.platforms import parse_dtype

Loss = Callable[..., jax.Array]
# optax >= 0.2.5 names it optax.tree.norm (optax.global_norm warns there).
_global_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


# ---------------------------------------------------------------- batches
@register_dataclass
@dataclasses.dataclass(frozen=True)
class Column:
    """One text column of a batch, padded: `[B, L]` int32 arrays as `Encoder.apply` takes them,
    and `prompt_length [B]`, the prompt tokens leading each row (left out of pooling by models
    whose pooling has `include_prompt=False`)."""

    input_ids: jax.Array
    attention_mask: jax.Array
    token_type_ids: jax.Array
    prompt_length: jax.Array


@register_dataclass(meta=("num_segments",))
@dataclasses.dataclass(frozen=True)
class PackedColumns:
    """All C columns of B texts packed back to back in R rows of L tokens, up to K =
    `num_segments` texts a row (`batching.plan_packed`): short texts then fill rows instead of
    padding. `[R, L]` int32 arrays as `SentenceEmbedder.packed` takes them, or `[N, R, L]`:
    N mini-batches of rows for the cached step; `prompt_length` gives each token its text's
    prompt length; `slots [C, B]` is where text (column c, example b) lands in the model's
    `[N * R * K]` outputs."""

    input_ids: jax.Array
    token_type_ids: jax.Array
    segment_ids: jax.Array
    positions: jax.Array
    prompt_length: jax.Array
    slots: jax.Array
    num_segments: int


@register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainBatch:
    """What the train step takes: columns (anchor, positive, negatives...) of B texts each,
    row i of every column belonging to example i, and optional labels `[B]` (e.g. CoSENT's
    similarity scores). The columns are padded `Column`s of B rows, none of them padding (each
    row is an in-batch negative for the others), embedded in one pass when they have one
    length; or all of them `PackedColumns`, embedded in one pass."""

    columns: tuple[Column, ...] | PackedColumns
    labels: jax.Array | None = None

    @property
    def size(self) -> int:
        """B, the examples in the batch."""
        if isinstance(self.columns, PackedColumns):
            return int(self.columns.slots.shape[1])
        return int(self.columns[0].input_ids.shape[0])

    @property
    def shape(self) -> tuple[tuple[int, ...], ...]:
        """`(B, L)` of each column, or `((R, L, K), (C, B))` when packed (`((N, R, L, K), (C, B))`
        in mini-batches): the step compiles once per distinct `shape`."""
        if isinstance(self.columns, PackedColumns):
            rows = tuple(self.columns.input_ids.shape)  # (R, L) or (N, R, L)
            return ((*rows, self.columns.num_segments), tuple(self.columns.slots.shape))
        return tuple(tuple(c.input_ids.shape) for c in self.columns)


# ---------------------------------------------------------------- optimizer
def linear_schedule_with_warmup(
    learning_rate: float, warmup_steps: int, total_steps: int
) -> optax.Schedule:
    """transformers' `get_linear_schedule_with_warmup`: 0 -> `learning_rate` over
    `warmup_steps` optimizer steps, then linearly to 0 at `total_steps`."""
    learning_rate = require_number("learning_rate", learning_rate, positive=True)
    warmup = max(1, warmup_steps)
    decay = max(1, total_steps - warmup_steps)

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        up = count / warmup
        down = jnp.maximum(0.0, (total_steps - count) / decay)
        return learning_rate * jnp.where(count < warmup_steps, up, down)

    return schedule


def check_learning_rate(learning_rate: float | optax.Schedule) -> float | optax.Schedule:
    """`learning_rate` if it is a finite number > 0, or a schedule whose rate at step 0 is a
    finite number >= 0 (warmup starts at 0); ValueError naming the argument otherwise (a NaN,
    infinite or negative rate trains to NaN vectors or uphill without an error)."""
    if not callable(learning_rate):
        return require_number("learning_rate", learning_rate, positive=True)
    first = learning_rate(0)
    try:
        require_number("learning_rate", first)
    except ValueError:
        raise ValueError(
            f"the learning_rate schedule gives {first!r} at step 0; it must give finite "
            "numbers >= 0"
        ) from None
    return learning_rate


def decay_mask(params: nnx.State) -> nnx.State:
    """True for the parameters that get weight decay: all but biases and normalization weights
    (leaves named `bias` and `scale`), the rule of transformers' Trainer."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _leaf_name(path) not in ("bias", "scale"), params
    )


def _leaf_name(path: tuple) -> str:
    """The parameter's own name in a pytree path (not the Variable's `value` attribute)."""
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return next(n for n in reversed(names) if n != "value")


def adamw(
    learning_rate: float | optax.Schedule = 5e-5,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    accumulation_steps: int = 1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """AdamW as sentence-transformers' trainer (transformers' Trainer) sets it up.

    Args:
        learning_rate: peak learning rate, or an optax schedule of the optimizer step.
        total_steps: optimizer steps of the run; with it, the rate warms up linearly over
            `warmup_steps` and then decays linearly to 0 (`linear_schedule_with_warmup`).
        warmup_steps: optimizer steps of linear warmup.
        weight_decay: decoupled weight decay, not applied to biases and LayerNorm weights.
        max_grad_norm: clip the gradients' global norm to this (None: no clipping).
        accumulation_steps: average the gradients of this many steps before each update.
        b1, b2, eps: Adam's moments and epsilon (torch's defaults).
    """
    accumulation_steps = require_int("accumulation_steps", accumulation_steps)
    learning_rate = check_learning_rate(learning_rate)
    weight_decay = require_number("weight_decay", weight_decay)
    if callable(learning_rate) or total_steps is None:
        schedule = learning_rate
    else:
        schedule = linear_schedule_with_warmup(
            learning_rate, require_int("warmup_steps", warmup_steps, minimum=0), total_steps
        )
    inner = optax.chain(
        optax.clip_by_global_norm(max_grad_norm) if max_grad_norm else optax.identity(),
        optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask),
    )
    if accumulation_steps == 1:
        return inner
    return optax.MultiSteps(inner, every_k_schedule=accumulation_steps)


# ---------------------------------------------------------------- state and step
@register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Parameters (float32 master weights), the optimizer's state and the steps taken."""

    params: nnx.State
    opt_state: Any
    step: jax.Array


def init_state(
    params: nnx.State,
    optimizer: optax.GradientTransformation,
    placement: Placement | None = None,
) -> TrainState:
    """A fresh state: float32 copies of `params` (e.g. `enc.params`), which the step donates,
    put by `placement` (e.g. `enc.placement`; default: where `params` are)."""
    params = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.float32, copy=True), params)
    state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    # Committed like the step's outputs, so the step's first call and the later ones share
    # one compiled program.
    return (placement or Placement.of(params)).put(state)


def default_compute_dtype(enc: Encoder) -> str:
    """The platform's `train_dtype` (bfloat16 on GPUs and TPUs, with float32 weights)."""
    return enc.backend.defaults.train_dtype


def embedder(
    enc: Encoder, compute_dtype: str | jnp.dtype | None = None
) -> Callable[[nnx.State, Column | PackedColumns], jax.Array]:
    """Pure `(params, column) -> float32 embeddings [B, E]` (`[C, B, E]` of `PackedColumns`),
    computed in `compute_dtype` (parameters are cast inside; the default is
    `default_compute_dtype(enc)`)."""
    dtype = parse_dtype(compute_dtype or default_compute_dtype(enc))
    graphdef = enc.graphdef
    if jnp.dtype(dtype) != jnp.dtype(enc.checkpoint.dtype):
        # The modules' compute dtype is part of the graph: build the same model in `dtype`.
        ckpt = enc.checkpoint
        family = family_for(ckpt.model_type)
        config = read_config(family, ckpt.config)

        def build() -> SentenceEmbedder:
            rngs = nnx.Rngs(0)
            return SentenceEmbedder(
                family.model(config, dtype=dtype, rngs=rngs), ckpt.head, dtype=dtype, rngs=rngs
            )

        graphdef, _ = nnx.split(nnx.eval_shape(build))
    impls = dict(enc.impls)

    def embed(params: nnx.State, column: Column | PackedColumns) -> jax.Array:
        params = compute_params(params, dtype)
        with ops.use_impl(**impls):
            if isinstance(column, PackedColumns):
                L = column.input_ids.shape[-1]
                rows = lambda x: x.reshape(-1, L)  # noqa: E731  (N mini-batches: one pass)
                out = programs.embed_packed(
                    graphdef,
                    params,
                    rows(column.input_ids),
                    rows(column.segment_ids),
                    rows(column.positions),
                    rows(column.token_type_ids),
                    rows(column.prompt_length),
                    column.num_segments,
                )
                return out.reshape(-1, out.shape[-1])[column.slots].astype(jnp.float32)
            out = programs.embed(
                graphdef,
                params,
                column.input_ids,
                column.attention_mask,
                column.token_type_ids,
                column.prompt_length[:, None],
            )
        return out.astype(jnp.float32)

    return embed


def compute_params(params: nnx.State, dtype: jnp.dtype) -> nnx.State:
    """The parameters the forward pass computes with: all cast to `dtype` but the embedding
    tables, whose looked-up rows are cast instead (so their gradient is summed in float32)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x if _leaf_name(path) == "embedding" else x.astype(dtype), params
    )


def call_loss(loss: Loss, embeddings: Sequence[jax.Array], labels: jax.Array | None) -> jax.Array:
    """`loss` on a batch's column embeddings: `loss(anchors, positives)`,
    `loss(anchors, positives, negatives [B, K, E])` or `loss(a, b, labels=labels)`."""
    if len(embeddings) < 2:
        raise ValueError(f"a loss needs at least two columns, the batch has {len(embeddings)}")
    check_loss_columns(loss, len(embeddings), labels is not None)
    args = list(embeddings[:2])
    if len(embeddings) > 2:
        args.append(jnp.stack(embeddings[2:], axis=1))
    return loss(*args) if labels is None else loss(*args, labels=labels)


def check_loss_columns(
    loss: Loss, columns: int | Sequence[str], labels: bool, *, what: str = "the batch"
) -> None:
    """ValueError saying which columns `loss` takes unless `call_loss` can call it with these
    text `columns` (a count or their names) and, if `labels`, a label column (checked against
    the loss's signature, so the error comes before training rather than as a TypeError)."""
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):  # not introspectable: the call itself will tell
        return
    count = columns if isinstance(columns, int) else len(columns)
    try:
        signature.bind(*[None] * min(count, 3), **({"labels": None} if labels else {}))
    except TypeError:
        named = "" if isinstance(columns, int) else f" {list(columns)}"
        has = f"{count} text column(s){named} and {'a' if labels else 'no'} label column"
        name = getattr(inspect.unwrap(loss), "__name__", None) or getattr(
            getattr(loss, "func", None), "__name__", "the loss"
        )
        raise ValueError(
            f"{name} cannot train on {what}: it takes {_takes(signature)}; {what} has {has} "
            "(labels: a trailing number in each example, or a 'label'/'score' column)"
        ) from None


def _takes(signature: inspect.Signature) -> str:
    """The columns a loss takes, from its signature: "columns (a, b) and a label column"."""
    params = signature.parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    texts = [p for p in params if p.kind in positional and p.name != "labels"]
    names = ""
    for i, p in enumerate(texts[:3]):  # a third takes every further column, stacked
        name = (", " if i else "") + p.name + ("..." if i == 2 else "")
        names += name if p.default is p.empty else f"[{name}]"
    label = signature.parameters.get("labels")
    if label is None:
        labels = "no label column"
    else:
        labels = "a label column" + (" (optional)" if label.default is not label.empty else "")
    return f"columns ({names}) and {labels}"


def loss_and_grad(
    embed: Callable[[nnx.State, Column], jax.Array],
    loss: Loss,
    params: nnx.State,
    batch: TrainBatch,
) -> tuple[jax.Array, nnx.State]:
    """The loss of `batch` and its gradient with respect to `params` (one backward pass)."""

    packed = isinstance(batch.columns, PackedColumns)
    lengths = set() if packed else {c.input_ids.shape[1] for c in batch.columns}

    def value(p: nnx.State) -> jax.Array:
        if packed:
            embeddings = list(embed(p, batch.columns))
        elif len(lengths) == 1:  # one forward pass over all columns: bigger matmuls
            joined = jax.tree.map(lambda *xs: jnp.concatenate(xs), *batch.columns)
            embeddings = jnp.split(embed(p, joined), len(batch.columns))
        else:
            embeddings = [embed(p, c) for c in batch.columns]
        return call_loss(loss, embeddings, batch.labels)

    return jax.value_and_grad(value)(params)


def cached_loss_and_grad(
    embed: Callable[[nnx.State, Column], jax.Array],
    loss: Loss,
    params: nnx.State,
    batch: TrainBatch,
    mini_batch_size: int,
) -> tuple[jax.Array, nnx.State]:
    """GradCache (sentence-transformers' Cached* losses): `loss_and_grad`'s result with the
    memory of one mini-batch of `mini_batch_size` rows.

    Embeddings are computed mini-batch by mini-batch without gradients, the loss's gradient
    with respect to all embeddings is taken, then each mini-batch's forward pass is run again
    and its vector-Jacobian product with that gradient is summed into the parameters' gradient.
    """
    if isinstance(batch.columns, PackedColumns):
        return _cached_packed_loss_and_grad(embed, loss, params, batch)
    m = mini_batch_size
    B = batch.size
    full = B // m * m

    def chunks(column: Column) -> tuple[Column, Column | None]:
        """The first `full` rows as `[B // m, m, L]`, and the remaining rows."""
        head = jax.tree.map(lambda x: x[:full].reshape(B // m, m, *x.shape[1:]), column)
        tail = jax.tree.map(lambda x: x[full:], column) if full < B else None
        return head, tail

    frozen = jax.lax.stop_gradient(params)
    split = [chunks(c) for c in batch.columns]
    embeddings = []
    for head, tail in split:
        e = jax.lax.map(lambda c: embed(frozen, c), head).reshape(full, -1)
        if tail is not None:
            e = jnp.concatenate([e, embed(frozen, tail)])
        embeddings.append(e)
    value, cotangents = jax.value_and_grad(lambda es: call_loss(loss, es, batch.labels))(embeddings)

    def accumulate(grads: nnx.State, chunk: tuple[Column, jax.Array]) -> tuple[nnx.State, None]:
        column, cotangent = chunk
        _, vjp = jax.vjp(lambda p: embed(p, column), params)
        return jax.tree.map(jnp.add, grads, vjp(cotangent)[0]), None

    grads = jax.tree.map(jnp.zeros_like, params)
    for (head, tail), g in zip(split, cotangents, strict=True):
        grads, _ = jax.lax.scan(accumulate, grads, (head, g[:full].reshape(B // m, m, -1)))
        if tail is not None:
            grads, _ = accumulate(grads, (tail, g[full:]))
    return value, grads


def _cached_packed_loss_and_grad(
    embed: Callable[[nnx.State, Column | PackedColumns], jax.Array],
    loss: Loss,
    params: nnx.State,
    batch: TrainBatch,
) -> tuple[jax.Array, nnx.State]:
    """`cached_loss_and_grad` of a batch packed in N mini-batches of rows (`collate(...,
    mini_batch_size=m)`), one mini-batch `[R, L]` per forward pass."""
    packed = batch.columns
    if packed.input_ids.ndim != 3:
        raise ValueError(
            "the cached step takes a packed batch in mini-batches: collate or make_batch with "
            "mini_batch_size=..., or pack=False"
        )
    N, R, _ = packed.input_ids.shape
    K = packed.num_segments
    # Each mini-batch as a PackedColumns whose slots are all its R * K outputs, in order.
    chunks = dataclasses.replace(packed, slots=jnp.broadcast_to(jnp.arange(R * K), (N, 1, R * K)))

    def rows_out(p: nnx.State, chunk: PackedColumns) -> jax.Array:
        return embed(p, chunk)[0]  # [R * K, E]

    frozen = jax.lax.stop_gradient(params)
    outputs = jax.lax.map(lambda chunk: rows_out(frozen, chunk), chunks)
    flat = outputs.reshape(N * R * K, -1)
    value, cotangent = jax.value_and_grad(
        lambda f: call_loss(loss, list(f[packed.slots]), batch.labels)
    )(flat)

    def accumulate(grads: nnx.State, item: tuple[PackedColumns, jax.Array]):
        chunk, g = item
        _, vjp = jax.vjp(lambda p: rows_out(p, chunk), params)
        return jax.tree.map(jnp.add, grads, vjp(g)[0]), None

    grads = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(accumulate, grads, (chunks, cotangent.reshape(N, R * K, -1)))
    return value, grads


def train_step(
    enc: Encoder,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    *,
    compute_dtype: str | None = None,
    mini_batch_size: int | None = None,
) -> Callable[[TrainState, TrainBatch], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted step `(state, batch) -> (new state, {"loss", "grad_norm"})`.

    The state's buffers are donated (do not use `state` after the call). One program is
    compiled per batch `shape`; `collate` pads to the bucket grid so there are few.

    Args:
        enc: the model (its graph, implementation choices and checkpoint).
        loss: a loss of embeddings, e.g. `mnrl_loss` (see `call_loss` for how it is called).
        optimizer: e.g. `adamw(...)`.
        compute_dtype: "float32" or "bfloat16" for the forward and backward passes; the
            state's parameters stay float32. Default: `default_compute_dtype(enc)`.
        mini_batch_size: run the cached (GradCache) step in mini-batches of this many rows of
            each padded column; a packed batch comes in its mini-batches already
            (`collate(..., mini_batch_size=...)`).
    """
    embed = embedder(enc, compute_dtype)
    if mini_batch_size is not None:
        mini_batch_size = require_int("mini_batch_size", mini_batch_size)
    placement = enc.placement

    def step(state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict[str, jax.Array]]:
        batch = split_rows(batch, placement)
        if mini_batch_size is None or mini_batch_size >= batch.size:
            value, grads = loss_and_grad(embed, loss, state.params, batch)
        else:
            value, grads = cached_loss_and_grad(embed, loss, state.params, batch, mini_batch_size)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "grad_norm": _global_norm(grads)}
        return TrainState(params, opt_state, state.step + 1), metrics

    if placement.mesh is None:
        return jax.jit(step, donate_argnums=0)
    # Several devices: the state stays replicated (the gradients are summed over the devices);
    # the batch goes whole to every device (token ids: small) and is split inside the step,
    # so a batch of any size, padded or packed, runs data parallel.
    jitted = jax.jit(step, donate_argnums=0, out_shardings=placement.replicated)

    def data_parallel_step(state: TrainState, batch: TrainBatch):
        return jitted(state, placement.put(batch))

    data_parallel_step.lower = lambda state, batch: jitted.lower(state, placement.put(batch))
    return data_parallel_step


def split_rows(batch: TrainBatch, placement: Placement) -> TrainBatch:
    """Inside the step: `batch`'s texts split by rows over the placement's devices, so each
    embeds its share; the loss then sees every device's embeddings (the in-batch negatives of
    all devices: the compiler gathers them) and the gradients are summed across devices."""
    if placement.mesh is None:
        return batch
    constrain = jax.lax.with_sharding_constraint
    columns = batch.columns
    if isinstance(columns, PackedColumns):
        axis = columns.input_ids.ndim - 2  # the rows of [R, L], or of [N, R, L] mini-batches
        arrays = ("input_ids", "token_type_ids", "segment_ids", "positions", "prompt_length")
        split = {name: constrain(getattr(columns, name), placement.split(axis)) for name in arrays}
        return dataclasses.replace(batch, columns=dataclasses.replace(columns, **split))
    columns = tuple(jax.tree.map(lambda x: constrain(x, placement.rows), c) for c in columns)
    return dataclasses.replace(batch, columns=columns)
