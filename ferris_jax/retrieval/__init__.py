"""Retrieval for RAG: documents -> chunks -> vectors -> a persistent index -> search."""
