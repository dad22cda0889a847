"""What Apple's jax-metal cannot run, read from a lowered program's StableHLO text.

`metal_unsafe_ops(enc.lower((8, 128)).as_text())` lists what would be rejected; tests run it
over every family's programs so the encoder stays "Metal-safe".
"""

from __future__ import annotations

import re

# What jax-metal 0.1.1 rejects, as patterns over a lowered program's StableHLO text.
_METAL_UNSAFE = (
    ("float64 type", re.compile(r"[x<]f64\b")),
    ("complex type", re.compile(r"complex<")),
    ("custom call", re.compile(r"stablehlo\.custom_call|\bcustom_call\b")),
    ("sort with a comparator", re.compile(r"stablehlo\.sort\b|\"stablehlo\.sort\"")),
    ("random number op", re.compile(r"stablehlo\.rng(_bit_generator)?\b")),
)
_BF16 = re.compile(r"[x<]bf16\b")
_CONTRACTING = re.compile(
    r"contracting_dims\s*=\s*\[([^\]]*)\]|lhs_contracting_dimensions\s*=\s*\[([^\]]*)\]"
)


def metal_unsafe_ops(stablehlo: str, *, allow_bf16: bool = False) -> list[str]:
    """What in a lowered program jax-metal cannot run: one line per kind of problem found.

    Checks float64/complex types, bfloat16 (unless `allow_bf16`), dot_general with more than
    one contracting dimension, custom calls (so no Pallas kernels), sorts and random ops.
    """
    found = [name for name, pattern in _METAL_UNSAFE if pattern.search(stablehlo)]
    if not allow_bf16 and _BF16.search(stablehlo):
        found.append("bfloat16 type")
    for m in _CONTRACTING.finditer(stablehlo):
        dims = [d for d in (m[1] if m[1] is not None else m[2]).split(",") if d.strip()]
        if len(dims) > 1:
            found.append(f"dot_general with {len(dims)} contracting dimensions")
            break
    return found
