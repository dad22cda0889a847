"""Ray Data: `Embedder` in `map_batches` on one local Ray instance (two CPUs, shared by every
test here) embeds real texts in a pool of two actors to the vectors one process computes; other
columns pass through; vectors go into an `Index`; errors name the column. The class itself is
also called directly, as Beam, Spark or Dask would call it."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers.data import sts_sentences

import ferris_jax
from ferris_jax.integrations.ray import Embedder
from ferris_jax.retrieval import Index

ray = pytest.importorskip("ray")

pytestmark = [
    # Ray Data's own, not ours: DataContext's deprecated fields, pandas 3's inplace=.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword:Warning:ray.data._internal.pandas_block"
    ),
]

ATOL = 1e-6
ROWS = 600  # 10 calls of 64 rows: enough for both actors


@pytest.fixture(scope="module")
def cluster():  # its tests are marked slow: Ray and five actors take about N s on 2 cores
    """One local Ray instance whose workers run JAX on the CPU, offline, with this run's XLA
    cache."""
    env_vars = {
        name: os.environ[name]
        for name in ("HF_HUB_OFFLINE", "FERRIS_JAX_CACHE_DIR", "TOKENIZERS_PARALLELISM")
        if name in os.environ
    }
    with warnings.catch_warnings():
        # JAX has started in this process (earlier tests), so JAX warns when Ray forks to start
        # its own processes; they exec at once and run no JAX. README: start Ray before JAX.
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level="warning",
            runtime_env={"env_vars": {**env_vars, "JAX_PLATFORMS": "cpu"}},
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield context
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tiny_st) -> str:
    return str(tiny_st[0])


@pytest.fixture(scope="module")
def texts():
    return sts_sentences("test")[:ROWS]


@pytest.fixture(scope="module")
def expected(model_path, texts):
    return ferris_jax.load(model_path).encode(texts)


def _dataset(texts):
    return ray.data.from_items([{"id": f"s{i}", "text": t} for i, t in enumerate(texts)])


def _recording() -> type:
    """`Embedder` that also says which process embedded each row and JAX's platforms there (a
    local class, so Ray ships it to the workers by value)."""

    class RecordingEmbedder(Embedder):
        def __call__(self, batch):
            import jax

            out = super().__call__(batch)
            n = len(out["id"])
            return {
                **out,
                "pid": np.full(n, os.getpid()),
                "jax": np.full(n, jax.config.jax_platforms),
            }

    return RecordingEmbedder


@pytest.mark.slow
def test_two_actors_embed_a_dataset_to_one_process_vectors(cluster, model_path, texts, expected):
    ds = _dataset(texts).map_batches(
        _recording(),
        fn_constructor_kwargs={"model": model_path, "encode_batch_size": 16},
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=64,
        runtime_env={"env_vars": {"JAX_PLATFORMS": ""}},  # Embedder's own default, this once
    )
    out = ds.to_pandas()  # rows come back in any order: the ids say which is which
    assert sorted(out.columns) == ["embedding", "id", "jax", "pid", "text"]
    order = np.argsort([int(i[1:]) for i in out["id"]])
    vectors = np.stack(out["embedding"].to_numpy()[order])
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=ATOL, rtol=0)
    assert out["text"].to_numpy()[order].tolist() == texts
    assert out["pid"].nunique() == 2, "both actors embedded rows"
    assert os.getpid() not in set(out["pid"])
    assert set(out["jax"]) == {"cpu"}, "actors without a GPU keep JAX off the node's GPUs"


@pytest.mark.slow
def test_pandas_batches_in_order_into_an_index(cluster, model_path, texts, expected):
    cluster.execution_options.preserve_order = True
    try:
        ds = (
            _dataset(texts)
            .map_batches(
                Embedder,
                fn_constructor_kwargs={"model": model_path, "embedding_column": "vector"},
                compute=ray.data.ActorPoolStrategy(size=2),
                batch_size=100,
                batch_format="pandas",
            )
            .materialize()
        )  # run once; read three times below
        enc = ferris_jax.load(model_path)
        index = Index(enc)
        for batch in ds.iter_batches(batch_size=256):  # dicts of numpy arrays, in row order
            index.add_embeddings(
                batch["vector"],
                ids=batch["id"].tolist(),
                texts=batch["text"].tolist(),
                model=enc.checkpoint.name,
            )
    finally:
        cluster.execution_options.preserve_order = False
    assert len(index) == len(texts)
    assert [hit[0].id for hit in index.search(texts[:5], top_k=1)] == [f"s{i}" for i in range(5)]
    assert ds.schema().names == ["id", "text", "vector"]
    np.testing.assert_allclose(ds.take_batch(len(texts))["vector"], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_a_missing_column_is_named(cluster, model_path, texts):
    ds = ray.data.from_items([{"body": t} for t in texts[:4]]).map_batches(
        Embedder,
        fn_constructor_kwargs={"model": model_path},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=4,
    )
    missing = r"no column 'text' \(its columns: 'body'\)"
    with pytest.raises(ray.exceptions.RayTaskError, match=missing):
        ds.take_all()


# The class without Ray: what Beam, Spark (mapInPandas) or Dask (map_partitions) call.


@pytest.fixture(scope="module")
def embedder(model_path):
    return Embedder(model_path, text_column="sentence", truncate_dim=8, encode_batch_size=4)


def test_dict_and_dataframe_batches_keep_their_other_columns(embedder, texts):
    enc = embedder.encoder
    want = enc.encode(texts[:5], truncate_dim=8)
    batch = {"sentence": np.array(texts[:5], dtype=object), "id": np.arange(5)}
    out = embedder(batch)
    assert set(out) == {"sentence", "id", "embedding"} and out["id"] is batch["id"]
    assert out["embedding"].dtype == np.float32 and out["embedding"].shape == (5, 8)
    np.testing.assert_allclose(out["embedding"], want, atol=ATOL, rtol=0)
    assert set(batch) == {"sentence", "id"}  # the input batch is not changed

    frame = pd.DataFrame({"id": range(5), "sentence": texts[:5]})
    out = embedder(frame)
    assert list(out.columns) == ["id", "sentence", "embedding"]
    assert list(frame.columns) == ["id", "sentence"]
    np.testing.assert_allclose(np.stack(out["embedding"]), want, atol=ATOL, rtol=0)

    fixed = {"sentence": np.array(texts[:2])}  # a fixed-width numpy str column
    np.testing.assert_allclose(embedder(fixed)["embedding"], want[:2], atol=ATOL, rtol=0)


def test_empty_batches(embedder):
    out = embedder({"sentence": np.array([], dtype=object)})
    assert out["embedding"].shape == (0, 8) and out["embedding"].dtype == np.float32
    assert len(embedder(pd.DataFrame({"sentence": []}))) == 0


def test_bad_batches_and_options_are_named(embedder, model_path):
    with pytest.raises(TypeError, match=r"column 'sentence' of this batch: texts\[1\] is NoneType"):
        embedder({"sentence": np.array(["a", None], dtype=object)})
    with pytest.raises(TypeError, match="batch_format='numpy'"):
        embedder([["a"]])
    with pytest.raises(ValueError, match="text_column must be a column name"):
        Embedder(model_path, text_column="")
    with pytest.raises(ValueError, match="role must be"):
        Embedder(model_path, role="passage")
    with pytest.raises(ValueError, match="encode_batch_size must be an integer"):
        Embedder(model_path, encode_batch_size=0)
    with pytest.raises(ValueError, match="prompt_name 'summary' is not one of"):
        Embedder(model_path, prompt_name="summary")
