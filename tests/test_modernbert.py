"""What only ModernBERT has: the hub's older config.json spelling of its attention layout."""

from __future__ import annotations

import json

import numpy as np
from helpers.checkpoints import make_modernbert_checkpoint
from helpers.texts import SENTENCES

import ferris_jax
from ferris_jax.models.modernbert import ModernBertConfig


def test_hub_config_spelling_loads_the_same(tmp_path):
    """Hub config.json files predate `layer_types` / `rope_parameters`."""
    from transformers import AutoConfig

    settings = dict(global_attn_every_n_layers=2, global_rope_theta=700.0, local_rope_theta=30.0)
    new = make_modernbert_checkpoint(tmp_path / "new", num_hidden_layers=4, **settings)
    old = make_modernbert_checkpoint(tmp_path / "old", num_hidden_layers=4, **settings)
    config = json.loads((old / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config |= settings
    (old / "config.json").write_text(json.dumps(config))
    # transformers reads the rewritten file as the original one ...
    hf_old, hf_new = AutoConfig.from_pretrained(str(old)), AutoConfig.from_pretrained(str(new))
    assert hf_old.layer_types == hf_new.layer_types
    assert hf_old.rope_parameters == hf_new.rope_parameters
    # ... and so do we.
    np.testing.assert_array_equal(
        ferris_jax.load(old).encode(SENTENCES), ferris_jax.load(new).encode(SENTENCES)
    )
    parsed = ModernBertConfig.from_hf(config)
    assert parsed.layer_types == tuple(hf_new.layer_types)
    assert (parsed.global_rope_theta, parsed.local_rope_theta) == (700.0, 30.0)
    # transformers 4.x read a null local_rope_theta as the global one.
    assert ModernBertConfig.from_hf(config | {"local_rope_theta": None}).local_rope_theta == 700.0
