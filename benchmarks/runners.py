"""The libraries the benchmark compares, behind one small interface (`Runner`).

A ferris_jax variant is a (label, load kwargs, encode kwargs) triple: `f32-bs32`, `bf16-bs128`
and the like are parsed from their label, and `FERRIS_VARIANTS` holds named ones (new options of
`load`/`encode`, such as another batching policy, go there). Peers are sentence-transformers with
its torch backend (`torch-fp16-bs128`, ...) or its ONNX backend (`onnx-fp32-bs32`, which needs
`optimum[onnxruntime]`; when that is missing or fails, the peer is skipped with one line).

Every runner can also encode while recording the (batch, length) shape of each batch it
computes, padding included, which gives padding efficiency and FLOPs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

DTYPE_NAMES = {
    "f32": "float32",
    "fp32": "float32",
    "bf16": "bfloat16",
    "f16": "float16",
    "fp16": "float16",
}


class Skip(Exception):
    """A runner that cannot run here; the message says why in one line."""


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Environment variables set for the duration of the block (then restored)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclasses.dataclass(frozen=True)
class FerrisVariant:
    """One ferris_jax configuration: `ferris_jax.load(**load_kwargs)`, `encode(**encode_kwargs)`."""

    label: str
    load_kwargs: dict[str, Any]
    encode_kwargs: dict[str, Any]
    max_batch_tokens: int | None = None  # Encoder.max_batch_tokens (token-budget batching)
    pack_length: int | str | None = None  # Encoder.pack_length; "off": one text per row
    layer_norm: str | None = None  # load(impls={"layer_norm": ...}): auto, xla, pallas
    attention: str | None = None  # load(impls={"attention": ...}): einsum, jax, cudnn
    matmul: str | None = None  # load(impls={"matmul": ...}): xla, bfloat16
    hf_tokenizer: bool = False  # "-hftok": FERRIS_JAX_FAST_TOKENIZER=0 (tokenizers, not nanotoken)
    segment_tokens: int | None = None  # "-seg<N>": Encoder.pack_segment_tokens


# Named variants beyond the pattern
# "<dtype>-bs<N>[-tok<M>][-pack<P>][-seg<S>][-ln<impl>][-attn<impl>][-mm<impl>][-hftok]".
FERRIS_VARIANTS: dict[str, FerrisVariant] = {}


def ferris_variant(label: str) -> FerrisVariant:
    """The variant named `label`: a FERRIS_VARIANTS key, or "<f32|bf16|f16>-bs<batch size>"."""
    if label in FERRIS_VARIANTS:
        return FERRIS_VARIANTS[label]
    m = re.fullmatch(
        r"(f32|fp32|bf16|f16|fp16)-bs(\d+)(?:-tok(\d+))?(?:-pack(\d+|off))?(?:-seg(\d+))?"
        r"(?:-ln([a-z_]+))?(?:-attn([a-z]+))?(?:-mm([a-z0-9]+))?(-hftok)?",
        label,
    )
    if not m:
        raise SystemExit(
            f"ferris variant {label!r}: use "
            "<f32|bf16|f16>-bs<N>[-tok<M>][-pack<P>|-packoff][-seg<S>][-ln<impl>][-attn<impl>]"
            "[-mm<impl>]"
            "[-hftok] "
            f"or one of {sorted(FERRIS_VARIANTS)}"
        )
    return FerrisVariant(
        label,
        {"dtype": DTYPE_NAMES[m[1]]},
        {"batch_size": int(m[2])},
        int(m[3]) if m[3] else None,
        m[4] if m[4] in (None, "off") else int(m[4]),
        m[6],
        m[7],
        m[8],
        bool(m[9]),
        int(m[5]) if m[5] else None,
    )


@dataclasses.dataclass(frozen=True)
class PeerSpec:
    """A sentence-transformers configuration: backend ("torch" or "onnx"), dtype, batch size."""

    label: str
    backend: str
    dtype: str
    batch_size: int


def peer_spec(label: str) -> PeerSpec:
    """Parse "<torch|onnx>-<fp32|fp16|bf16>-bs<N>"."""
    m = re.fullmatch(r"(torch|onnx)-(f32|fp32|bf16|f16|fp16)-bs(\d+)", label)
    if not m:
        raise SystemExit(f"peer {label!r}: use <torch|onnx>-<fp32|fp16|bf16>-bs<N>")
    if m[1] == "onnx" and DTYPE_NAMES[m[2]] != "float32":
        raise SystemExit(f"peer {label!r}: the ONNX export is float32 only")
    return PeerSpec(label, m[1], DTYPE_NAMES[m[2]], int(m[3]))


class FerrisRunner:
    """ferris_jax on one model, one variant. Its persistent compilation cache is off, so the
    compile times it reports are real compilations."""

    library = "ferris_jax"

    def __init__(
        self, variant: FerrisVariant, path: Path, device: str, max_seq_length: int, tf32: bool
    ):
        import jax

        import ferris_jax

        self.label = f"ferris {variant.label}"
        self.encode_kwargs = {"show_progress_bar": False, **variant.encode_kwargs}
        self.batch_size = int(variant.encode_kwargs.get("batch_size", 32))
        # The variant's implementation choice is the encoder's own: part of each program's key.
        impls = {
            "layer_norm": variant.layer_norm,
            "attention": variant.attention,
            "matmul": variant.matmul,
        }
        start = time.perf_counter()
        from ferris_jax.tokenize import FAST_TOKENIZER_ENV

        with _environment({FAST_TOKENIZER_ENV: "0"} if variant.hf_tokenizer else {}):
            self.enc = ferris_jax.load(
                str(path),
                backend="cuda" if device == "gpu" else "cpu",
                max_seq_length=max_seq_length,
                compilation_cache=False,
                impls={k: v for k, v in impls.items() if v is not None},
                **variant.load_kwargs,
            )
        self.load_s = time.perf_counter() - start
        self.enc.max_batch_tokens = variant.max_batch_tokens
        if variant.segment_tokens is not None:
            self.enc.pack_segment_tokens = variant.segment_tokens
        if variant.pack_length is not None:  # else the encoder's own default
            self.enc.pack_length = None if variant.pack_length == "off" else variant.pack_length
        if (self.enc.device.platform == "cpu") != (device == "cpu"):
            raise SystemExit(f"{self.label}: asked for {device}, got {self.enc.device}")
        self.dtype = np.dtype(self.enc.checkpoint.dtype).name
        # JAX computes float32 matmuls in TF32 on recent GPUs unless told otherwise; torch does not.
        self._precision = (
            "float32" if device == "gpu" and self.dtype == "float32" and not tf32 else None
        )
        self._jax = jax

    def _context(self):
        """float32 matmuls without TF32 on a GPU unless --tf32 (read when a program compiles)."""
        if self._precision is None:
            return contextlib.nullcontext()
        return self._jax.default_matmul_precision(self._precision)

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        with self._context():
            return self.enc.encode(texts, **self.encode_kwargs, **kwargs)

    def encode_one(self, text: str) -> np.ndarray:
        with self._context():
            return self.enc.encode(text, show_progress_bar=False)

    def encode_recording(self, texts: list[str]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """`encode`, recording the shape of each batch it dispatches: (B, L), or (B, L, K)
        for a packed batch (`encode(on_batch=...)`)."""
        shapes: list[tuple[int, ...]] = []
        out = self.encode(
            texts, on_batch=lambda batch: shapes.append(tuple(int(s) for s in batch.shape))
        )
        return out, shapes

    def compile_stats(self) -> dict[str, Any]:
        return {
            "programs": len(self.enc.compiled_programs),
            "compile_s": round(self.enc.compile_seconds, 3),
            "shapes": [list(s) for s in self.enc.compiled_programs],
        }

    def device_peak_bytes(self) -> int | None:
        """JAX's peak bytes in use on the device: for the whole process so far (never reset)."""
        stats = self.enc.device.memory_stats() if self.enc.device.platform != "cpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def info(self) -> dict[str, Any]:
        return {
            "load_s": round(self.load_s, 3),
            "device": str(self.enc.device),
            "matmul_precision": self._precision or "default",
            "layer_norm": self.enc.info().get("layer_norm"),
            "impls": dict(self.enc.requested_impls()),
        }

    def close(self) -> None:
        self.enc.close()  # its tokenizer thread
        del self.enc
        self._jax.clear_caches()


def _onnx_available(device: str) -> str:
    """The ONNX Runtime provider to use; Skip with the reason if the ONNX backend cannot run."""
    try:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForFeatureExtraction  # noqa: F401
    except Exception as e:  # ImportError, or an optimum incompatible with this transformers
        raise Skip(f"optimum[onnxruntime] unusable: {type(e).__name__}: {_first_line(e)}") from e
    providers = ort.get_available_providers()
    want = "CUDAExecutionProvider" if device == "gpu" else "CPUExecutionProvider"
    if want not in providers:
        raise Skip(f"onnxruntime {ort.__version__} has no {want} (has {providers})")
    return want


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


class SentenceTransformersRunner:
    """sentence-transformers (torch or ONNX backend) on one model, in one dtype."""

    library = "sentence-transformers"

    def __init__(self, spec: PeerSpec, path: Path, device: str, max_seq_length: int):
        import torch
        from sentence_transformers import SentenceTransformer

        self.label = f"st {spec.label}"
        self.backend, self.dtype, self.batch_size = spec.backend, spec.dtype, spec.batch_size
        self.device = "cuda" if device == "gpu" else "cpu"
        kwargs: dict[str, Any] = {}
        self.provider = None
        if spec.backend == "onnx":
            self.provider = _onnx_available(device)
            kwargs = {"backend": "onnx", "model_kwargs": {"provider": self.provider}}
        start = time.perf_counter()
        try:
            self.model = SentenceTransformer(str(path), device=self.device, **kwargs)
        except Exception as e:
            if spec.backend == "onnx":  # the export can fail on an untested version pair
                raise Skip(f"ONNX export/load failed: {type(e).__name__}: {_first_line(e)}") from e
            raise
        self.model.max_seq_length = max_seq_length
        if spec.backend == "torch":
            self.model.to(getattr(torch, self.dtype))  # as model.half() / .to(torch.bfloat16)
        self.load_s = time.perf_counter() - start
        self._torch = torch

    def _encode(self, texts: str | list[str], batch_size: int) -> np.ndarray:
        out = self.model.encode(
            texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
        )
        return out.float().cpu().numpy()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.batch_size)

    def encode_one(self, text: str) -> np.ndarray:
        return self._encode(text, self.batch_size)

    def encode_recording(self, texts: list[str]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """`encode`, recording the padded input_ids shape the first module gets for each batch."""
        shapes: list[tuple[int, ...]] = []

        def hook(module, args):
            shapes.append(tuple(int(s) for s in args[0]["input_ids"].shape))

        handle = self.model[0].register_forward_pre_hook(hook)
        try:
            out = self.encode(texts)
        finally:
            handle.remove()
        return out, shapes

    def device_peak_bytes(self) -> int | None:
        """torch's peak allocated bytes since `reset_device_peak` (None on CPU)."""
        if self.device != "cuda":
            return None
        return int(self._torch.cuda.max_memory_allocated())

    def reset_device_peak(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.reset_peak_memory_stats()

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"load_s": round(self.load_s, 3), "backend": self.backend}
        if self.provider:
            info["provider"] = self.provider
        auto_model = getattr(self.model[0], "auto_model", None)
        config = getattr(auto_model, "config", None)
        if config is not None:
            info["attn_implementation"] = getattr(config, "_attn_implementation", None)
        return info

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
