"""Platforms: one name per platform, and ONE table of every default that differs by platform.

`platform_of(device)` names a device's platform the way this table is keyed ("cuda" or "rocm"
where JAX says "gpu"; "metaljax" or "METAL" (Apple's jax-metal) where JAX says Metal; other PJRT
plugins keep their own name: "mps", "mtl", ...). Everything else
that depends on the platform (packing, batch-token cap, compilation cache, dtypes, the
LayerNorm, attention and matmul `auto` choices) is read from `defaults_for(platform)`, so adding a
backend touches this file only. Each measured value cites BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from importlib import metadata

import jax
import jax.numpy as jnp

from ferris_jax.errors import BackendFallbackWarning

# The table's names of the Apple GPU PJRT plugins, in the order `load` prefers them: metaljax,
# jax-mps, Apple's jax-metal (unmaintained), metal-pjrt-plugin. metaljax first on the plugins' own
# JAX test-suite results (99.5% passing vs jax-mps' 95.8%); neither is measured here.
APPLE_PLATFORMS = ("metaljax", "mps", "METAL", "mtl")
# JAX's platform names of those plugins, as `jax.devices(name)` takes them: metaljax registers
# "metal", jax-metal "METAL", jax-mps "mps", metal-pjrt-plugin "mtl".
APPLE_JAX_PLATFORMS = ("metal", "METAL", "mps", "mtl")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_ALL_DTYPES = tuple(DTYPES)


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
    """The parameter/compute dtypes a platform runs correctly (statistics are always float32)."""

    supported: tuple[str, ...] = _ALL_DTYPES
    reason: str = ""

    def resolve(self, dtype: str, platform: str) -> str:
        """`dtype` if supported, else float32 with a one-line warning saying why."""
        if dtype in self.supported:
            return dtype
        warnings.warn(
            f"ferris-jax: dtype {dtype} is not used on {platform} ({self.reason}); using float32",
            BackendFallbackWarning,
            stacklevel=3,
        )
        return "float32"


@dataclasses.dataclass(frozen=True)
class PlatformDefaults:
    """What ferris-jax does by default on one platform.

    Attributes:
        pack_length: packed row length (`Encoder.pack_length`); None: one text per row.
        pack_min_params: models with fewer parameters are not packed.
        pack_segment_tokens: a packed row of L tokens holds at most L // this texts
            (`Encoder.pack_segment_tokens`): more texts per row, more output slots per row.
        max_batch_tokens: cap on padded tokens per batch (`Encoder.max_batch_tokens`).
        compilation_cache: whether JAX's persistent compilation cache works there.
        dtypes: the dtypes the platform runs correctly.
        layer_norm: what `impl="auto"` of the LayerNorm primitive runs.
        attention: what `impl="auto"` of `ops.attention` runs.
        matmul: what `impl="auto"` of `ops.dense` runs ("xla" everywhere: "bfloat16" operands
            change the numbers, so they are opt-in).
        train_dtype: the compute dtype of a train step (its weights stay float32).
    """

    pack_length: int | None = 64
    pack_min_params: int = 0
    pack_segment_tokens: int = 12
    max_batch_tokens: int | None = None
    compilation_cache: bool = True
    dtypes: DtypePolicy = DtypePolicy()
    layer_norm: str = "xla"
    attention: str = "einsum"
    matmul: str = "xla"
    train_dtype: str = "float32"


_APPLE = PlatformDefaults(
    # Unmeasured on Apple GPUs: the CPU's packing. float32 only: bfloat16/float16 gave wrong
    # numbers or failed to compile on jax-metal and on jax-mps 0.10.
    dtypes=DtypePolicy(("float32",), "this Apple GPU plugin is reliable in float32 only"),
)
# The current plugins (metaljax 0.11.9, jax-mps 0.11.1) run float32, float16 and bfloat16 in their
# own test suites and examples, and neither serializes executables ("SerializeExecutable is not
# implemented" / "Serialize not implemented" in their libraries), so JAX's persistent cache is
# off. Attention goes through `jax.nn.dot_product_attention`: jax-mps's patch of that function
# runs MLX's fused kernel, and metaljax fuses its lowering (as it does the einsum form's). Both
# unmeasured here: no Mac in CI.
_MLX_PLUGIN = PlatformDefaults(compilation_cache=False, attention="jax")

# Measured values cite their BENCHMARKS.md section: "Packing several texts per row" (CPU),
# "CUDA defaults re-measured" (H200), "the LayerNorm primitive, XLA vs Pallas", "cuDNN attention".
PLATFORM_DEFAULTS: dict[str, PlatformDefaults] = {
    # CPU: packing at 64 and a 2048-token batch cap were faster on every corpus of run.py;
    # rows that may hold one text per 2 tokens: empty strings 5.9x, one to three words 1.9x,
    # the other corpora -2% to +6% ("Very short texts on the CPU").
    "cpu": PlatformDefaults(pack_length=64, max_batch_tokens=2048, pack_segment_tokens=2),
    # CUDA: packing pays only where the device, not the tokenizer, is the limit: bert-base
    # 1.15-1.31x packed at 128; all-MiniLM-L6-v2 (22M) 0.88-0.96x packed, so below the floor.
    "cuda": PlatformDefaults(
        pack_length=128,
        pack_min_params=50_000_000,
        layer_norm="pallas",
        attention="cudnn",
        train_dtype="bfloat16",
    ),
    # ROCm: unmeasured; packing as on CUDA, the portable LayerNorm, XLA's attention.
    "rocm": PlatformDefaults(
        pack_length=128, pack_min_params=50_000_000, attention="jax", train_dtype="bfloat16"
    ),
    # TPU: unmeasured; the portable ops, and training in bfloat16 as on the GPUs.
    "tpu": PlatformDefaults(train_dtype="bfloat16"),
    # metaljax (`pip install "ferris-jax[metaljax]"`): JAX's platform "metal".
    "metaljax": _MLX_PLUGIN,
    # jax-mps (`[mps]`): fused attention, LayerNorm and GELU kernels through its patch of JAX.
    "mps": _MLX_PLUGIN,
    # Apple's jax-metal (`[metal]`, jax 0.4.35, unmaintained): no persistent cache.
    "METAL": dataclasses.replace(_APPLE, compilation_cache=False),
    # metal-pjrt-plugin: never run by us; the cautious Apple defaults.
    "mtl": _APPLE,
}
# PJRT plugins we do not know: the portable choices (jnp LayerNorm, einsum attention).
UNKNOWN_PLATFORM = PlatformDefaults()


def defaults_for(platform: str) -> PlatformDefaults:
    """The defaults of `platform` (a `platform_of` name); unknown platforms get portable ones."""
    return PLATFORM_DEFAULTS.get(platform, UNKNOWN_PLATFORM)


def platform_of(device: jax.Device) -> str:
    """The platform name of a device: "cuda" or "rocm" where JAX says "gpu", "metaljax" or "METAL"
    where JAX says Metal."""
    name = device.platform
    version = str(getattr(getattr(device, "client", None), "platform_version", "")).lower()
    if name == "gpu":  # CUDA and ROCm devices both report "gpu"; the client knows which
        return "rocm" if "rocm" in version else "cuda"
    if name in ("metal", "METAL"):
        return "metaljax" if name == "metal" or "metaljax" in version else table_name(name)
    return name


def table_name(platform: str) -> str:
    """The table's name for a platform name JAX lowers programs for.

    metaljax and jax-metal both call their platform Metal: "metal" is metaljax's; "METAL" is
    jax-metal's unless metaljax is the Metal plugin installed here (they need different jax
    versions, so one process has at most one of them).
    """
    if platform == "metal" or (platform == "METAL" and installed_metal_plugin() == "metaljax"):
        return "metaljax"
    return platform


def lowering_platforms() -> tuple[str, ...]:
    """The names JAX lowers programs for that have a row: `lax.platform_dependent`'s keys."""
    others = (p for p in PLATFORM_DEFAULTS if p not in APPLE_PLATFORMS)
    return (*others, *APPLE_JAX_PLATFORMS)


@functools.cache
def installed_metal_plugin() -> str | None:
    """ "metaljax", "jax-metal" or None: the distribution providing JAX's Metal platform here."""
    for name in ("jax-metal", "metaljax"):  # jax-metal first: it pins the whole jax stack
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return None


def default_platform() -> str:
    """The `platform_of` name of JAX's default device."""
    return platform_of(jax.devices()[0])


def dtype_policy(platform: str) -> DtypePolicy:
    """The dtypes `platform` runs correctly (jax-metal and metal-pjrt-plugin: float32 only)."""
    return defaults_for(platform).dtypes


def parse_dtype(dtype: str | jnp.dtype) -> jnp.dtype:
    """One of DTYPES from a name or dtype; ValueError naming the allowed ones."""
    name = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[name]
