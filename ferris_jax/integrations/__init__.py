"""Adapters to the RAG frameworks people already use (optional extras)."""
