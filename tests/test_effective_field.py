"""The explicit effective field against autodiff of the real network, and a NumPy re-implementation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import numpy_effective_rhs, problem

import flowtrunc as ft


def pushforward(net, data, train_weights, parameterisation="direct"):
    """J_c(p) (-grad_p C): the autodiff gradient of the real network's input-layer cost
    (forward pass), pushed to the cumulative parameters (thresholds, D, b). The
    parameters p are (d, b), or (log d, b) for the log parameterisation."""
    as_scales = jnp.exp if parameterisation == "log" else (lambda a: a)

    def rebuild(params):
        scales, biases = params
        return ft.AdaptedReLUNet(frame=net.frame, scales=as_scales(scales), biases=biases)

    def cost(params):
        return ft.input_cost(rebuild(params), data, method="forward")

    start = (jnp.log(net.scales) if parameterisation == "log" else net.scales, net.biases)
    grad_scales, grad_biases = jax.grad(cost)(start)
    if not train_weights:
        grad_scales = jnp.zeros_like(grad_scales)
    tangent = (-grad_scales, -grad_biases)

    def cumulative(params):
        theta, cum_scales = ft.thresholds(rebuild(params))
        _, cum_biases = rebuild(params).cumulative()
        # b^(l) in frame coordinates: cumulative biases are D^(l)-scaled, frame-free
        return theta, cum_scales, cum_biases

    _, velocity = jax.jvp(cumulative, (start,), (tangent,))
    return velocity


@pytest.mark.slow  # compiles programs of its own: 46 s on 2 cores (tests/README.md)
@pytest.mark.parametrize("parameterisation", ["direct", "log"])
@pytest.mark.parametrize("train_weights", [True, False], ids=["trained", "frozen"])
@pytest.mark.parametrize("depth, width", [(1, 1), (2, 3), (3, 2), (4, 3)])
def test_field_equals_autodiff_pushforward(train_weights, depth, width, parameterisation):
    """docs/theory.md §3 check at 4 x 15 = 60 random non-degenerate states, to 1e-10, for
    gradient flow on d and on log d."""
    keys = jax.random.split(jax.random.key(11 + depth), 15)
    build = lambda key: problem(key, depth=depth, width=width, num_points=20, bias_scale=0.8)  # noqa: E731
    nets, datas = eqx.filter_vmap(build)(keys)
    field = eqx.filter_vmap(
        lambda n, d: ft.effective_field(n, d, train_weights=train_weights, parameterisation=parameterisation)
    )(nets, datas)
    expected = eqx.filter_vmap(lambda n, d: pushforward(n, d, train_weights, parameterisation))(nets, datas)
    for got, want in zip(field, expected):
        want = np.asarray(want)
        scale = 1.0 + np.max(np.abs(want), axis=(1, 2))
        error = np.max(np.abs(np.asarray(got) - want), axis=(1, 2)) / scale
        assert np.all(error < 1e-10), error
    assert np.any(np.abs(np.asarray(field.thresholds)) > 1e-3)  # the states do move


@pytest.mark.parametrize("train_weights", [True, False], ids=["trained", "frozen"])
def test_field_matches_numpy_reimplementation(train_weights, key):
    net, data = problem(key, depth=4, width=3, num_points=30, bias_scale=0.8)
    theta, scales = ft.thresholds(net)
    frame = np.asarray(net.frame)
    u, v = np.asarray(data.x) @ frame.T, np.asarray(data.point_targets()) @ frame.T
    want = numpy_effective_rhs(np.asarray(theta), np.asarray(scales), u, v, train_weights)
    got = ft.effective_field(net, data, train_weights=train_weights)
    assert np.allclose(got.thresholds, want[0], rtol=1e-12, atol=1e-13)
    assert np.allclose(got.scales, want[1], rtol=1e-12, atol=1e-13)


def test_ties_make_the_lower_layer_field_tangent(key):
    """At a tie θ^(a) = θ^(b), a < b, Γ_ba = Γ_aa: under layer a the tie is invariant,
    the degenerate case of the Filippov sliding combination (docs/theory.md)."""
    from flowtrunc.internal import gamma_column

    net, _ = problem(key, depth=4, width=3, bias_scale=0.8)
    theta, scales = ft.thresholds(net)
    theta = theta.at[3].set(theta[1])  # tie layer 4 with layer 2
    active = jnp.full((3,), 1, jnp.int32)
    column = gamma_column(theta, scales, active, "direct")
    assert np.allclose(column[3], column[1], rtol=1e-14)


@pytest.mark.wrong_types
def test_field_rejects_general_net(key):
    net, data = problem(key)
    with pytest.raises(ValueError, match="`effective_field` needs an AdaptedReLUNet"):
        ft.effective_field(net.to_general(), data)


@pytest.mark.slow  # compiles programs of its own: 44 s on 2 cores (tests/README.md)
def test_field_under_vmap(key):
    keys = jax.random.split(key, 4)
    nets, datas = eqx.filter_vmap(problem)(keys)
    batched = eqx.filter_vmap(ft.effective_field)(nets, datas)
    single = ft.effective_field(*problem(keys[2]))
    assert np.allclose(batched.thresholds[2], single.thresholds, rtol=1e-13)
