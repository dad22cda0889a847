"""Benchmarks of ferris_jax, run from the repository root as `python -m benchmarks.<name>`: one
harness, `run.py` (ferris_jax against sentence-transformers on the same corpora: throughput,
latency, compilation, memory, start-up; `encode_cpu.py` is a preset of it, `startup.py` its
fresh-process child), its helpers (`corpus.py`, `bench_models.py`, `runners.py`), and one-off
probes that each answer one question (`profile_stages`, `model_only`, `dispatch_overhead`,
`attention_gpu`, `layer_norm_gpu`, `load_memory`, `tokenizer_threads`), plus
`make_transport_copy` to carry MiniLM to a machine without network. See README.md here.
"""
