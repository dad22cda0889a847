"""`python -m ferris_jax` runs the command line."""

from ferris_jax.cli import console

raise SystemExit(console())
