"""Adapters to the frameworks people already use (LangChain, LlamaIndex, Ray Data; optional
extras), and the checks of their arguments they share."""

from typing import Any


def require_texts(method: str, texts: Any) -> list[str]:
    """`texts` as a list, or TypeError unless they are str: one str given where a list is
    expected would otherwise be embedded character by character."""
    if isinstance(texts, str):
        raise TypeError(
            f"{method} takes a list of str, got one str: pass [text], or embed one text with "
            "the adapter's single-text method"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{method} takes a list of str, got {type(text).__name__} at [{i}]")
    return texts


def require_text(method: str, text: Any) -> None:
    """TypeError unless `text` is one str."""
    if not isinstance(text, str):
        raise TypeError(f"{method} takes one str, got {type(text).__name__}")
