"""ferris-jax: JAX-native sentence embeddings.

>>> import ferris_jax
>>> enc = ferris_jax.load("sentence-transformers/all-MiniLM-L6-v2")
>>> vectors = enc.encode(["A sentence.", "Another one."])
"""

from ferris_jax.api import load
from ferris_jax.encoder import Encoder
from ferris_jax.errors import CheckpointError, ModelNotFoundError
from ferris_jax.similarity import cos_sim, dot_score, semantic_search

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "Encoder",
    "ModelNotFoundError",
    "cos_sim",
    "dot_score",
    "load",
    "semantic_search",
]
