"""Fine-tuning with optax: pure contrastive losses of embeddings, a train step, evaluators."""
