"""`python -m ferris_jax` runs the command line."""

from ferris_jax.cli import main

raise SystemExit(main())
