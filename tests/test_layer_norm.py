"""The one LayerNorm primitive, run against every implementation that runs here (XLA, and the
Pallas kernel in interpret mode): forward and gradients vs torch and the jnp reference, for
layer_norm and the fused add_layer_norm, under jit/vmap/grad; lowering for CUDA from this CPU."""

from __future__ import annotations

import dataclasses
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import export

from ferris_jax import ops
from ferris_jax.ops.layer_norm import reference_layer_norm
from ferris_jax.ops.layer_norm.primitive import layer_norm_p
from ferris_jax.platforms import PLATFORM_DEFAULTS

IMPLS = ["xla", "pallas_interpret"]  # "pallas" (Triton) needs a GPU: benchmarks/layer_norm_gpu.py
# Max error relative to max(1, |reference|), for a reduction over 32; scaled by sqrt(H / 32).
TOL = {jnp.float32: 2e-6, jnp.bfloat16: 1e-2, jnp.float16: 2e-3}
TRITON_CALLS = ("__gpu$xla.gpu.triton", "triton_kernel_call_ffi")  # jaxlib <= 0.10.2, later


def _inputs(shape, dtype, seed=0):
    kx, kr, ks, kb, kd = jax.random.split(jax.random.key(seed), 5)
    H = shape[-1]
    return (
        (3.0 * jax.random.normal(kx, shape) + 0.5).astype(dtype),
        jax.random.normal(kr, shape).astype(dtype),
        (1 + 0.1 * jax.random.normal(ks, (H,))).astype(dtype),
        (0.1 * jax.random.normal(kb, (H,))).astype(dtype),
        jax.random.normal(kd, shape).astype(dtype),
    )


def _torch_reference(x, residual, scale, bias, eps, dy):
    """float64 torch: y, dx (= dresidual), dscale, dbias."""
    t = lambda a: torch.tensor(np.asarray(a, np.float64), requires_grad=True)  # noqa: E731
    tx, tr, ts, tb = t(x), t(residual), t(scale), t(bias)
    y = torch.nn.functional.layer_norm(tx + tr, (tx.shape[-1],), ts, tb, eps)
    y.backward(torch.tensor(np.asarray(dy, np.float64)))
    assert np.array_equal(tx.grad.numpy(), tr.grad.numpy())
    return y.detach().numpy(), tx.grad.numpy(), ts.grad.numpy(), tb.grad.numpy()


def _err(got, want) -> float:
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "dtype,H",
    [(dtype, H) for dtype in (jnp.float32, jnp.bfloat16) for H in (32, 100, 384, 768, 1024, 4096)]
    + [(jnp.float16, H) for H in (100, 768)],
)
def test_forward_and_backward_match_torch(impl, dtype, H):
    x, r, scale, bias, dy = _inputs((3, 5, H), dtype)

    @jax.jit
    def both(x, r, scale, bias, dy):  # one program (one compile) for both entry points
        plain = lambda x, s, b: ops.layer_norm(x, s, b, eps=1e-5, impl=impl)  # noqa: E731
        fused = lambda x, r, s, b: ops.add_layer_norm(x, r, s, b, eps=1e-5, impl=impl)  # noqa: E731
        y, vjp = jax.vjp(plain, x, scale, bias)
        y_add, vjp_add = jax.vjp(fused, x, r, scale, bias)
        return (y, *vjp(dy)), (y_add, *vjp_add(dy))

    (y, dx, ds, db), (y_add, dx_add, dr_add, ds_add, db_add) = both(x, r, scale, bias, dy)
    np.testing.assert_array_equal(dx_add, dr_add)
    tol = TOL[dtype] * np.sqrt(H / 32)
    for residual, got in (
        (jnp.zeros_like(x), (y, dx, ds, db)),
        (r, (y_add, dx_add, ds_add, db_add)),
    ):
        want = _torch_reference(x, residual, scale, bias, 1e-5, dy)
        assert {a.dtype for a in got} == {jnp.dtype(dtype)}
        errors = [_err(g, w) for g, w in zip(got, want, strict=True)]
        # dscale sums 15 rows of products and is rounded once: 15x the tolerance
        assert max(errors[:2] + errors[3:]) <= tol and errors[2] <= 15 * tol, errors


def _compositions(f, fa, x, r, scale, bias):
    """Every composition, in one program: f(x, s, b) is LayerNorm, fa(x, r, s, b) the fused add."""
    S, B = jnp.stack([scale, 2 * scale]), jnp.stack([bias, -bias])
    per_row = scale.reshape(1, 1, -1) * (1 + 0.1 * jnp.arange(6.0)).reshape(
        1, 6, 1
    )  # [1, 6, H] vs x [4, 6, H]
    r_t = jnp.swapaxes(r, 0, 1)
    cube = lambda fn: lambda *a: jnp.sum(fn(*a) ** 3)  # noqa: E731
    stacked = lambda s, b: jax.vmap(f, (None, 0, 0))(x, s, b)  # noqa: E731
    return {
        "plain": f(x, scale, bias),
        "fused": fa(x, r, scale, bias),
        "vmap axis 0": jax.vmap(f, (0, None, None))(x, scale, bias),
        "vmap axis 1": jax.vmap(f, (1, None, None), 1)(x, scale, bias),
        # fused add under vmap: both batched (on different axes), and only one of them
        "vmap x and residual": jax.vmap(fa, (0, 1, None, None))(x, r_t, scale, bias),
        "vmap x only": jax.vmap(fa, (0, None, None, None))(x, r[0], scale, bias),
        "vmap residual only": jax.vmap(fa, (None, 0, None, None))(x[0], r, scale, bias),
        # parameters that vary along leading axes: vmap over stacks, and plain broadcasting
        "vmap parameters": jax.vmap(f, (None, 0, 0))(x, S, B),
        "vmap scale, fused": jax.vmap(fa, (None, None, 0, None))(x, r, S, bias),
        "per-row scale": f(x, per_row, bias),
        "grad fused": jax.grad(cube(fa), (0, 1, 2, 3))(x, r, scale, bias),
        "grad per-row scale": jax.grad(cube(f), (1, 2))(x, per_row, bias),
        "grad of vmap over parameters": jax.grad(cube(stacked), (0, 1))(S, B),
        "grad of vmap over x and residual": jax.grad(
            cube(jax.vmap(fa, (1, 0, None, None))), (0, 1, 2, 3)
        )(jnp.swapaxes(x, 0, 1), r, scale, bias),
        "per-example grads": jax.vmap(jax.grad(cube(fa), (0, 1, 2, 3)), (0, 1, None, None))(
            x, r_t, scale, bias
        ),
    }


@pytest.mark.parametrize("impl", IMPLS)
def test_jit_vmap_grad_compose(impl):
    """Every composition, ours vs the jnp reference under the same vmap and autodiff."""
    args = _inputs((4, 6, 48), jnp.float32, seed=1)[:4]
    ours = jax.jit(
        partial(
            _compositions,
            lambda x, s, b: ops.layer_norm(x, s, b, eps=1e-12, impl=impl),
            lambda x, r, s, b: ops.add_layer_norm(x, r, s, b, eps=1e-12, impl=impl),
        )
    )(*args)
    reference = jax.jit(
        partial(
            _compositions,
            lambda x, s, b: reference_layer_norm(x, s, b, 1e-12),
            lambda x, r, s, b: reference_layer_norm(x, s, b, 1e-12, r),
        )
    )(*args)
    for name, want in reference.items():
        for got, w in zip(jax.tree.leaves(ours[name]), jax.tree.leaves(want), strict=True):
            assert got.shape == w.shape, name
            # float32 sums over 48 lanes and up to 24 rows of terms up to ~100 (cubic loss)
            assert _err(got, w) <= 1e-5, name


@pytest.mark.parametrize("impl", IMPLS)
def test_eager_and_empty(impl):
    x, r, scale, bias, _ = _inputs((2, 3, 40), jnp.float32)
    want = reference_layer_norm(x, scale, bias, 1e-5, r)
    np.testing.assert_allclose(
        ops.add_layer_norm(x, r, scale, bias, eps=1e-5, impl=impl), want, atol=2e-6
    )
    empty = jnp.zeros((0, 40), jnp.float32)
    assert ops.layer_norm(empty, scale, bias, eps=1e-5, impl=impl).shape == (0, 40)


def test_every_layer_norm_is_the_one_primitive_and_the_add_is_fused():
    x, r, scale, bias, _ = _inputs((2, 3, 32), jnp.float32)
    fwd = str(jax.make_jaxpr(lambda x, r: ops.add_layer_norm(x, r, scale, bias, eps=1e-5))(x, r))
    assert fwd.count(f"{layer_norm_p.name}[") == 1 and "has_residual=True" in fwd
    assert not re.search(r"= add ", fwd)  # the sum happens inside the primitive
    loss = lambda x, r: jnp.sum(ops.add_layer_norm(x, r, scale, bias, eps=1e-5))  # noqa: E731
    grads = str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, r))
    assert grads.count(f"{layer_norm_p.name}[") == 2 and "backward=True" in grads


def test_bad_operands_raise():
    x, r, scale, bias, _ = _inputs((2, 3, 32), jnp.float32)
    with pytest.raises(ValueError, match="residual bfloat16"):
        ops.add_layer_norm(x, r.astype(jnp.bfloat16), scale, bias, eps=1e-5)
    with pytest.raises(ValueError, match=r"scale .* must end in"):
        ops.layer_norm(x, scale[:16], bias, eps=1e-5)
    with pytest.raises(ValueError, match="broadcast"):
        ops.layer_norm(x, jnp.ones((4, 1, 32)), bias, eps=1e-5)


def test_impl_selection(monkeypatch):
    monkeypatch.delenv("FERRIS_JAX_LAYER_NORM", raising=False)
    assert ops.resolve_impl() == "xla"  # auto on this CPU
    assert ops.resolve_impl("auto", platform="cuda") == PLATFORM_DEFAULTS["cuda"].layer_norm
    assert ops.resolve_impl("auto", platform="some_new_plugin") == "xla"
    assert ops.resolve_impl("pallas", platform="rocm") == "pallas"
    assert ops.resolve_impl("pallas_interpret") == "pallas_interpret"
    with ops.use_impl(layer_norm="pallas_interpret"):
        assert ops.resolve_impl() == "pallas_interpret"
        assert ops.resolve_impl("xla") == "xla"  # the argument wins
    with pytest.raises(
        ValueError, match=r"'pallas' needs a GPU.*'cpu'.*'xla' or 'pallas_interpret'"
    ):
        ops.resolve_impl("pallas", platform="cpu")
    with pytest.raises(ValueError, match="impl 'nope' is not available"):
        ops.resolve_impl("nope")
    monkeypatch.setenv("FERRIS_JAX_LAYER_NORM", "pallas_interpret")
    assert ops.resolve_impl() == "pallas_interpret"
    monkeypatch.setenv("FERRIS_JAX_LAYER_NORM", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        ops.resolve_impl()


def test_explicit_pallas_on_cpu_is_a_clear_error():
    x, _, scale, bias, _ = _inputs((2, 32), jnp.float32)
    with pytest.raises(ValueError, match=r"needs a GPU platform .* lowered for 'cpu'"):
        jax.jit(lambda x: ops.layer_norm(x, scale, bias, eps=1e-5, impl="pallas"))(x)


def _custom_calls(text: str) -> set[str]:
    return set(re.findall(r"custom_call @([\w$.]+)", text))


def _cuda_export_lowers_triton_here() -> bool:
    """jaxlib <= 0.10.2 embeds Triton IR; later jaxlibs compile it while lowering (GPU plugin)."""
    from jax._src.lib import triton, version

    return version <= (0, 10, 2) or triton.has_compilation_handler("cuda")


@pytest.mark.parametrize("H", [100, 768])
def test_export_for_cuda_emits_the_triton_kernel(H):
    if not _cuda_export_lowers_triton_here():
        pytest.skip("this jaxlib compiles Triton while lowering and has no CUDA plugin here")
    x = jax.ShapeDtypeStruct((4, 7, H), jnp.bfloat16)
    p = jax.ShapeDtypeStruct((H,), jnp.bfloat16)

    def program(impl):
        f = lambda x, r, s, b: ops.add_layer_norm(x, r, s, b, eps=1e-12, impl=impl)  # noqa: E731
        loss = lambda *a: jnp.sum(f(*a).astype(jnp.float32) ** 2)  # noqa: E731
        return jax.jit(lambda *a: (f(*a), jax.grad(loss, (0, 1, 2, 3))(*a)))

    checks = [export.DisabledSafetyCheck.custom_call(name) for name in TRITON_CALLS]
    text = {
        impl: export.export(program(impl), platforms=["cuda"], disabled_checks=checks)(
            x, x, p, p
        ).mlir_module()
        for impl in ("pallas", "xla")
    }
    (call,) = _custom_calls(text["pallas"])
    assert call in TRITON_CALLS
    assert "ferris_layer_norm_fwd" in text["pallas"] and "ferris_layer_norm_bwd" in text["pallas"]
    assert not _custom_calls(text["xla"])
    # impl="auto" on this CPU takes the default lowering: the jnp reference, no custom call
    cpu = program("auto").lower(*(jnp.zeros(a.shape, a.dtype) for a in (x, x, p, p))).as_text()
    assert not _custom_calls(cpu)


def test_auto_is_resolved_per_platform_at_lowering(monkeypatch):
    """The platform table's entry for the platform being lowered decides; explicit impls are
    checked."""
    if not _cuda_export_lowers_triton_here():
        pytest.skip("this jaxlib compiles Triton while lowering and has no CUDA plugin here")
    cuda = dataclasses.replace(PLATFORM_DEFAULTS["cuda"], layer_norm="pallas")
    monkeypatch.setitem(PLATFORM_DEFAULTS, "cuda", cuda)
    checks = [export.DisabledSafetyCheck.custom_call(name) for name in TRITON_CALLS]

    def cuda_calls(impl, shape):
        x, p = (
            jax.ShapeDtypeStruct(shape, jnp.bfloat16),
            jax.ShapeDtypeStruct(shape[-1:], jnp.bfloat16),
        )
        f = jax.jit(lambda x, s, b: ops.layer_norm(x, s, b, eps=1e-5, impl=impl))
        exp = export.export(f, platforms=["cuda"], disabled_checks=checks)(x, p, p)
        return _custom_calls(exp.mlir_module())

    assert cuda_calls("auto", (8, 64)) <= set(TRITON_CALLS) and cuda_calls("auto", (8, 64))
    # past int32 offsets the kernel cannot run: auto takes the reference, explicit pallas says why
    huge = (2**20, 2**11 + 1)
    assert not cuda_calls("auto", huge)
    with pytest.raises(ValueError, match="int32 offsets"):
        cuda_calls("pallas", huge)
