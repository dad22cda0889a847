"""Where programs run: backend choice and its capability probe (`backend`), JAX's persistent
compilation cache (`compilation`), and the scan for what jax-metal rejects (`metal`)."""
