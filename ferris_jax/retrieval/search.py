"""Exact search over a corpus held on the device in equal blocks, and float rescoring.

Pure functions of arrays; `Index` holds the blocks and does the I/O. A corpus is a sequence of
device arrays of one shape `[R, D]` (float32/bfloat16, int8/uint8 from `quantize_embeddings`)
or `[R, ceil(D/8)]` (binary/ubinary packed bits); block i holds rows i*R .. i*R+R-1 and
`valid[i]` marks the rows that may be returned (deleted rows, filters, the padding at the end of
the last block). Each block runs one jitted program, compiled once per (query bucket, block
shape, k, precision), which scores the block, takes its top-k (`ops.top_k`) and merges it into
the running best on the device.

Over several devices (`mesh`: a placement's one-axis mesh) each block is split by rows: every
device scores its slice against the whole (replicated) queries and takes that slice's top-k;
the devices' candidates are gathered (`all_gather`) and merged into one top-k on every device,
ordered as on one device (score, then row).

Scores are dot products (normalize for cosine), accumulated in float32 (with bfloat16 blocks
the queries are rounded to bfloat16 first, as a bfloat16 matmul does), except:
- int8/uint8: float query . dequantized corpus vector, computed without dequantizing the
  corpus as `(q * step) . c + q . offset` (`quantization.int8_query_weights`). Measured on
  MiniLM embeddings (STS train 10.5k, STS test queries, k=10): recall@10 of the int8 search
  itself 0.995 this way, 0.866 when queries are quantized too (int8 x int8, as
  sentence-transformers' usearch search does); after rescoring with 2x candidates 0.99996 vs
  0.988.
- binary/ubinary: minus the Hamming distance of the sign bits, as FAISS' `IndexBinaryFlat` and
  sentence-transformers' usearch "hamming" search rank them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ferris_jax._compat import shard_map
from ferris_jax.errors import require_int
from ferris_jax.ops.top_k import top_k
from ferris_jax.placement import AXIS
from ferris_jax.quantization import PRECISIONS, int8_query_weights

# Candidates per result a quantized search returns with `candidates=True`, for float rescoring.
# sentence-transformers' default `rescore_multiplier` is 2; it keeps int8 at recall@10 0.99996,
# but binary needs 10 (recall@10 after rescoring on MiniLM/STS: 0.79 at 2, 0.89 at 4, 0.95 at 8,
# 0.96 at 10).
RESCORE_MULTIPLIER = {"float32": 1, "int8": 2, "uint8": 2, "binary": 10, "ubinary": 10}
# Query rows are padded to one of these counts, so a few programs serve every batch size.
QUERY_BUCKETS = (1, 8, 64, 256, 1024)
# The largest [queries, block rows] float32 score matrix one program may build.
SCORE_BUDGET_BYTES = 1 << 30
# Up to this many query rows, binary scores are XOR + popcount; above, a +-1 matmul.
_POPCOUNT_MAX_QUERIES = 8
# Float query chunks of at most this many rows are scored as multiply + row sum instead of a
# dot (an alternative to a slow GEMV). Off: on a CPU it was 45x slower than the dot at 1M x 384
# (3.5 s vs 78 ms); `python -m benchmarks.search` times it on GPUs as "ferris_jax matvec".
MATVEC_MAX_QUERIES = 0


def search_blocks(
    queries: jax.Array,
    blocks: Sequence[jax.Array],
    k: int,
    *,
    valid: Sequence[jax.Array] | None = None,
    precision: str = "float32",
    ranges: np.ndarray | None = None,
    candidates: bool = False,
    rescore_multiplier: int | None = None,
    score_budget_bytes: int = SCORE_BUDGET_BYTES,
    mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The best `k` rows of a blocked corpus for each query, exactly.

    Args:
        queries: float `[Q, D]` (or `[D]`) query embeddings (never quantized by the caller).
        blocks: same-shaped device arrays: `[R, D]` float32/bfloat16 ("float32"), int8 or uint8
            ("int8"/"uint8"), or `[R, ceil(D/8)]` int8/uint8 packed bits ("binary"/"ubinary").
        k: results per query.
        valid: None (every row valid) or one bool `[R]` per block; False rows are never returned.
        precision: how the blocks were quantized: one of `quantization.PRECISIONS`.
        ranges: int8/uint8 only: the `[2, D]` ranges the corpus was quantized with.
        candidates: quantized precisions only: return `k * rescore_multiplier` rows, to be
            re-ranked by `rescore` with the candidates' float vectors.
        rescore_multiplier: candidates per result (default `RESCORE_MULTIPLIER[precision]`).
        score_budget_bytes: cap on the float32 score matrix of one program; larger query batches
            are split.
        mesh: the blocks and masks are split by rows over this one-axis mesh (a placement's
            `mesh`; R a multiple of its size) and the queries replicated on it: each device
            searches its rows and the top-k are merged on the devices.

    Returns:
        `(scores [Q, n] float32, rows [Q, n] int32)`, best first, equal scores lower row first;
        places beyond the valid row count hold score -inf and row -1. Scores are dot products
        (int8/uint8: with the dequantized corpus; binary: minus the Hamming distance).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    k = require_int("k", k)
    n_out = k
    if candidates and precision != "float32":
        m = RESCORE_MULTIPLIER[precision] if rescore_multiplier is None else rescore_multiplier
        n_out = k * require_int("rescore_multiplier", m)
    blocks = list(blocks)
    if not blocks:
        raise ValueError("blocks is empty: a search needs at least one corpus block")
    single = jnp.ndim(queries) == 1
    queries = jnp.atleast_2d(jnp.asarray(queries, jnp.float32))
    Q, D = queries.shape
    R, W = blocks[0].shape
    for i, block in enumerate(blocks):
        if block.shape != (R, W) or block.dtype != blocks[0].dtype:
            raise ValueError(
                f"blocks[{i}] is {block.dtype}{list(block.shape)}, blocks[0] is "
                f"{blocks[0].dtype}{[R, W]}: every block must have one shape and dtype"
            )
    kind, weights = _prepare(precision, blocks[0].dtype, D, W, ranges)
    if valid is None:
        masks = [jnp.ones((R,), bool)] * len(blocks)
    else:
        masks = list(valid)
        if len(masks) != len(blocks):
            raise ValueError(f"valid has {len(masks)} masks for {len(blocks)} blocks")
        for i, m in enumerate(masks):
            if m.shape != (R,) or m.dtype != jnp.bool_:
                raise ValueError(f"valid[{i}] must be bool [{R}], got {m.dtype}{list(m.shape)}")

    if mesh is not None and R % mesh.size:
        raise ValueError(f"blocks of {R} rows do not split over {mesh.size} devices")
    step_all, step_block = (
        (_all_blocks_step, _block_step)
        if mesh is None
        else (
            functools.partial(_sharded_all_blocks_step, mesh=mesh),
            functools.partial(_sharded_block_step, mesh=mesh),
        )
    )
    chunk = _query_chunk(Q, R, score_budget_bytes)
    padded = -(-Q // chunk) * chunk
    if padded != Q:
        queries = jnp.pad(queries, ((0, padded - Q), (0, 0)))
    matvec = kind == "float" and chunk <= MATVEC_MAX_QUERIES
    out_s, out_r = [], []
    for start in range(0, padded, chunk):
        q = queries if chunk == padded else queries[start : start + chunk]
        q = _query_operand(q, kind, weights, W)
        if chunk * R * len(blocks) * 4 <= score_budget_bytes:
            # The whole corpus's scores fit the budget: one program, one top-k over all blocks
            # (a top-k and a merge per block cost more than the scores for a few queries).
            best_s, best_r = step_all(
                q, tuple(blocks), tuple(masks), n_out=n_out, kind=kind, matvec=matvec
            )
            out_s.append(best_s)
            out_r.append(best_r)
            continue
        best_s = jnp.full((chunk, n_out), -jnp.inf, jnp.float32)
        best_r = jnp.full((chunk, n_out), -1, jnp.int32)
        for i, (block, mask) in enumerate(zip(blocks, masks, strict=True)):
            best_s, best_r = step_block(
                q,
                block,
                mask,
                jnp.int32(i * R),
                best_s,
                best_r,
                n_out=n_out,
                kind=kind,
                matvec=matvec,
            )
        out_s.append(best_s)
        out_r.append(best_r)
    scores = jnp.concatenate(out_s) if len(out_s) > 1 else out_s[0]
    rows = jnp.concatenate(out_r) if len(out_r) > 1 else out_r[0]
    if padded != Q:
        scores, rows = scores[:Q], rows[:Q]
    if kind == "int8" and weights is not None:
        scores = scores + (queries[:Q] @ weights[1])[:, None]  # -inf stays -inf
    return (scores[0], rows[0]) if single else (scores, rows)


def rescore(
    queries: jax.Array, candidates: jax.Array, candidate_rows: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
    """Re-rank candidates by exact float dot products with their float vectors.

    Args:
        queries: float32 `[Q, D]`.
        candidates: float32 `[Q, C, D]`, the candidates' float vectors (any vector where the row
            is -1).
        candidate_rows: int32 `[Q, C]` corpus rows of the candidates, -1 for empty places.
        k: results per query (k > C leaves empty places).

    Returns:
        `(scores [Q, k] float32, rows [Q, k] int32)`, best first, equal scores lower row
        first; rows -1 (score -inf) last.
    """
    return _rescore(
        jnp.asarray(queries, jnp.float32),
        jnp.asarray(candidates, jnp.float32),
        jnp.asarray(candidate_rows, jnp.int32),
        require_int("k", k),
    )


@functools.partial(jax.jit, static_argnums=3)
def _rescore(queries, candidates, rows, k):
    # Candidates in row order first, so that equal scores rank the lower row first, whatever
    # order the quantized search found them in.
    order = jnp.argsort(jnp.where(rows >= 0, rows, jnp.iinfo(jnp.int32).max), axis=1)
    rows = jnp.take_along_axis(rows, order, 1)
    candidates = jnp.take_along_axis(candidates, order[:, :, None], 1)
    scores = jnp.einsum("qd,qcd->qc", queries, candidates, precision="highest")
    scores = jnp.where(rows >= 0, scores, -jnp.inf)
    values, pos = top_k(scores, k)
    return values, jnp.where(pos >= 0, jnp.take_along_axis(rows, jnp.maximum(pos, 0), 1), -1)


def _prepare(precision, dtype, D, W, ranges):
    """The scoring kind and, for int8/uint8, the device `(scale [D], offset [D])` of the query."""
    dtype = jnp.dtype(dtype)
    if precision == "float32":
        if dtype not in (jnp.float32, jnp.bfloat16) or W != D:
            raise ValueError(
                f"float32 search needs float32/bfloat16 blocks [R, {D}], got {dtype}[R, {W}]"
            )
        return "float", None
    if precision in ("int8", "uint8"):
        if dtype != jnp.dtype(precision) or W != D:
            raise ValueError(
                f"{precision} search needs {precision} blocks [R, {D}], got {dtype}[R, {W}]"
            )
        if ranges is None:
            raise ValueError(
                f"{precision} search needs the `ranges` [2, {D}] the corpus was quantized with"
            )
        if np.shape(ranges) != (2, D):
            raise ValueError(f"ranges must be [2, {D}], got {list(np.shape(ranges))}")
        scale, offset = int8_query_weights(np.asarray(ranges), precision)
        return "int8", (jnp.asarray(scale), jnp.asarray(offset))
    if dtype not in (jnp.int8, jnp.uint8) or W != -(-D // 8):
        want = f"[R, {-(-D // 8)}]"
        raise ValueError(
            f"{precision} search needs packed int8/uint8 blocks {want}, got {dtype}[R, {W}]"
        )
    return precision, None


def _query_chunk(Q: int, R: int, budget: int) -> int:
    """Query rows per program: a bucket >= Q, capped so `[rows, R]` float32 fits `budget`."""
    cap = max(1, budget // (4 * R))
    fits = [b for b in QUERY_BUCKETS if b <= cap] or [1]
    return next((b for b in fits if b >= Q), fits[-1])


def _query_operand(q, kind, weights, W):
    if kind == "int8":
        return q * weights[0][None, :]
    if kind in ("binary", "ubinary"):  # sign bits packed like np.packbits: first bit is the MSB
        bits = jnp.pad(q > 0, ((0, 0), (0, 8 * W - q.shape[1]))).reshape(q.shape[0], W, 8)
        return jnp.sum(
            bits.astype(jnp.uint8) << jnp.arange(7, -1, -1, dtype=jnp.uint8)[None, None, :], -1
        ).astype(jnp.uint8)
    return q


@functools.partial(jax.jit, static_argnames=("n_out", "kind", "matvec"))
def _block_step(q, block, valid, offset, best_s, best_r, *, n_out, kind, matvec):
    scores = _scores(q, block, kind, matvec)
    scores = jnp.where(valid[None, :], scores, -jnp.inf)
    values, idx = top_k(scores, n_out)
    rows = jnp.where(idx >= 0, idx + offset, -1)
    # Earlier blocks first: on equal scores the lower row wins, as in top_k.
    values, pos = jax.lax.top_k(jnp.concatenate([best_s, values], 1), n_out)
    return values, jnp.take_along_axis(jnp.concatenate([best_r, rows], 1), pos, 1)


@functools.partial(jax.jit, static_argnames=("n_out", "kind", "matvec"))
def _all_blocks_step(q, blocks, valid, *, n_out, kind, matvec):
    scores = jnp.concatenate([_scores(q, block, kind, matvec) for block in blocks], axis=1)
    scores = jnp.where(jnp.concatenate(valid)[None, :], scores, -jnp.inf)
    return top_k(scores, n_out)  # block i's rows follow block i - 1's: indices are rows


def _local_top_k(q, blocks, valid, offsets, n_out, kind, matvec):
    """On one device: the top `n_out` of its slices of `blocks` (`[r]` rows each), as
    (scores, corpus rows); slice i's local row j is corpus row `offsets[i] + j`."""
    scores = jnp.concatenate([_scores(q, block, kind, matvec) for block in blocks], axis=1)
    scores = jnp.where(jnp.concatenate(valid)[None, :], scores, -jnp.inf)
    values, idx = top_k(scores, n_out)
    r = blocks[0].shape[0]
    rows = jnp.asarray(offsets, jnp.int32)[jnp.maximum(idx, 0) // r] + jnp.maximum(idx, 0) % r
    return values, jnp.where(idx >= 0, rows, -1)


def _best_of(values, rows, n_out):
    """The best `n_out` of candidate (score, row) columns: higher score first, then lower row
    (the order one device's top-k gives); empty places (-inf, -1) last."""
    last = jnp.iinfo(jnp.int32).max
    neg, keys = jax.lax.sort((-values, jnp.where(rows >= 0, rows, last)), dimension=1, num_keys=2)
    keys = keys[:, :n_out]
    return -neg[:, :n_out], jnp.where(keys == last, -1, keys)


def _gathered_best(values, rows, n_out):
    """Every device's candidates gathered, then the best `n_out` of them, on every device."""
    values = jax.lax.all_gather(values, AXIS, axis=1, tiled=True)
    rows = jax.lax.all_gather(rows, AXIS, axis=1, tiled=True)
    return _best_of(values, rows, n_out)


@functools.partial(jax.jit, static_argnames=("n_out", "kind", "matvec", "mesh"))
def _sharded_all_blocks_step(q, blocks, valid, *, n_out, kind, matvec, mesh):
    R, n = blocks[0].shape[0], mesh.size

    def search(q, blocks, valid):
        start = jax.lax.axis_index(AXIS) * (R // n)
        offsets = [i * R + start for i in range(len(blocks))]
        values, rows = _local_top_k(q, blocks, valid, jnp.stack(offsets), n_out, kind, matvec)
        return _gathered_best(values, rows, n_out)

    rows, whole = PartitionSpec(AXIS), PartitionSpec()
    specs = (whole, (rows,) * len(blocks), (rows,) * len(valid))
    return shard_map(search, mesh, specs, (whole, whole))(q, blocks, valid)


@functools.partial(jax.jit, static_argnames=("n_out", "kind", "matvec", "mesh"))
def _sharded_block_step(q, block, valid, offset, best_s, best_r, *, n_out, kind, matvec, mesh):
    R, n = block.shape[0], mesh.size

    def search(q, block, valid, offset, best_s, best_r):
        start = offset + jax.lax.axis_index(AXIS) * (R // n)
        values, rows = _local_top_k(q, [block], [valid], start[None], n_out, kind, matvec)
        values, rows = _gathered_best(values, rows, n_out)
        return _best_of(
            jnp.concatenate([best_s, values], 1), jnp.concatenate([best_r, rows], 1), n_out
        )

    rows, whole = PartitionSpec(AXIS), PartitionSpec()
    specs = (whole, rows, rows, whole, whole, whole)
    return shard_map(search, mesh, specs, (whole, whole))(q, block, valid, offset, best_s, best_r)


def _scores(q, block, kind, matvec=False):
    """`[Qc, R]` float32 scores of one block."""
    if matvec:
        products = (
            block.astype(jnp.float32)[None, :, :]
            * q.astype(block.dtype).astype(jnp.float32)[:, None, :]
        )
        return jnp.sum(products, axis=-1)
    if kind == "float":
        return jnp.einsum(
            "qd,rd->qr", q.astype(block.dtype), block, preferred_element_type=jnp.float32
        )
    if kind == "int8":
        return jnp.einsum(
            "qd,rd->qr", q, block.astype(jnp.float32), preferred_element_type=jnp.float32
        )
    bits = jax.lax.bitcast_convert_type(block, jnp.uint8)
    if kind == "binary":
        bits = bits ^ jnp.uint8(0x80)  # undo quantize_embeddings' -128
    if q.shape[0] <= _POPCOUNT_MAX_QUERIES:
        diff = jax.lax.population_count(q[:, None, :] ^ bits[None, :, :])
        return -jnp.sum(diff, axis=-1, dtype=jnp.int32).astype(jnp.float32)
    signs = _unpack_signs(bits)  # [R, 8W] of +-1: dot = 8W - 2 * hamming
    dots = jnp.einsum("qd,rd->qr", _unpack_signs(q), signs, preferred_element_type=jnp.float32)
    return (dots - signs.shape[1]) / 2


def _unpack_signs(bits):
    shifts = jnp.arange(7, -1, -1, dtype=jnp.uint8)
    unpacked = (bits[:, :, None] >> shifts[None, None, :]) & jnp.uint8(1)
    return (2 * unpacked.astype(jnp.bfloat16) - 1).reshape(bits.shape[0], -1)
