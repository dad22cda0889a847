"""A stand-in for sentence-transformers' `CrossEncoder` whose scores are a given tensor, so the
reference cross-encoder losses run their own `forward` (pairing, padding, sampling) on known
logits and torch autograd gives their gradients with respect to those logits."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def table_cross_encoder(pairs: Sequence[tuple[str, str]], table: Any, num_labels: int = 1):
    """A `CrossEncoder` (it passes the losses' `isinstance` checks) whose score of `pairs[r]` is
    `table[r]` (`table`: a torch tensor `[len(pairs)]`, or `[len(pairs), num_labels]`). Every
    pair it scores is appended to `.calls`, as the row numbers of one forward call."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    class TableCrossEncoder(CrossEncoder):
        def __init__(self):
            torch.nn.Module.__init__(self)  # no transformer: the scores are the table's
            self.row: dict[Hashable, int] = {tuple(p): r for r, p in enumerate(pairs)}
            if len(self.row) != len(pairs):
                raise ValueError("pairs must be distinct to be looked up")
            self.table = table
            self.calls: list[list[int]] = []

        @property
        def num_labels(self) -> int:
            return num_labels

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        def preprocess(self, pairs, prompt=None, task=None) -> dict:
            rows = [self.row[tuple(p)] for p in pairs]
            self.calls.append(rows)
            return {"rows": torch.tensor(rows)}

        def forward(self, features: dict, **kwargs) -> dict:
            scores = self.table[features["rows"]]
            return {"scores": scores if scores.ndim == 2 else scores[:, None]}

    return TableCrossEncoder()
