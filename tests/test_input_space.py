import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_adapted_net, random_general_net

import flowtrunc as ft


def numpy_cumulative(weights, biases):
    w_cum, b_cum = np.eye(weights.shape[-1]), np.zeros(weights.shape[-1])
    out_w, out_b = [], []
    for w, b in zip(np.asarray(weights), np.asarray(biases)):
        w_cum, b_cum = w @ w_cum, w @ b_cum + b
        out_w.append(w_cum)
        out_b.append(b_cum)
    return np.stack(out_w), np.stack(out_b)


@pytest.mark.parametrize("depth, width", [(1, 2), (3, 3), (6, 5)])
def test_cumulative_matches_numpy(key, depth, width):
    net = random_general_net(key, depth, width)
    w_cum, b_cum = ft.cumulative(net)
    ref_w, ref_b = numpy_cumulative(net.weights, net.biases)
    assert np.allclose(w_cum, ref_w, rtol=1e-13, atol=1e-13)
    assert np.allclose(b_cum, ref_b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-12), (jnp.float32, 2e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("depth, width", [(2, 2), (4, 3), (6, 5)])
def test_layer_identity(key, depth, width, dtype, rtol):
    """x^(l) = W^(l) x~^(l) + b^(l) for every layer (docs/theory.md §1)."""
    net = random_general_net(key, depth, width, dtype=dtype)
    x = jax.random.normal(jax.random.fold_in(key, 1), (50, width), dtype)
    hidden = net.hidden_layers(x)
    w_cum, b_cum = ft.cumulative(net)
    for layer in range(1, depth + 1):
        xt = ft.input_layer(net, x, layer)
        rebuilt = xt @ w_cum[layer - 1].T + b_cum[layer - 1][None]
        scale = np.max(np.abs(hidden[layer - 1])) + 1.0
        assert np.max(np.abs(rebuilt - hidden[layer - 1])) / scale < rtol, layer


def test_truncation_map_closed_form_in_frame(key):
    """For W = D R the map is R^T max(Rx, -b/D): a projection below the threshold."""
    net = random_adapted_net(key, 1, 3)
    w_cum, b_cum = ft.cumulative(net)
    x = jax.random.normal(key, (30, 3))
    mapped = ft.truncation_map(w_cum[0], b_cum[0], x)
    frame = np.asarray(net.frame)
    theta = -np.asarray(b_cum[0]) / np.asarray(net.scales[0])
    assert np.allclose(mapped, np.maximum(np.asarray(x) @ frame.T, theta) @ frame, atol=1e-13)
    assert np.allclose(ft.truncation_map(w_cum[0], b_cum[0], x[0]), mapped[0], atol=1e-14)


@pytest.mark.parametrize("depth, width", [(1, 2), (3, 2), (5, 4)])
def test_adapted_closed_form_equals_composition(key, depth, width):
    net = random_adapted_net(key, depth, width)
    x = 0.8 * jax.random.normal(jax.random.fold_in(key, 3), (40, width))
    for layer in range(0, depth + 1):
        closed = ft.input_layer(net, x, layer)
        composed = ft.input_layer(net, x, layer, method="compose")
        forward = ft.input_layer(net, x, layer, method="forward")
        assert np.allclose(closed, composed, rtol=1e-12, atol=1e-12)
        assert np.allclose(closed, forward, rtol=1e-12, atol=1e-12)


def test_thresholds_match_definition(key):
    net = random_adapted_net(key, 4, 3)
    theta, cum_scales = ft.thresholds(net)
    _, b_cum = ft.cumulative(net)
    assert np.allclose(cum_scales, np.cumprod(np.asarray(net.scales), axis=0), rtol=1e-14)
    assert np.allclose(theta, -np.asarray(b_cum) / np.asarray(cum_scales), rtol=1e-13, atol=1e-14)


def test_cost_split_in_frame_coordinates(key):
    """C = sum_k C_k, with C computed in input space and C_k in frame coordinates."""
    net = random_adapted_net(key, 3, 3)
    data = ft.make_clusters(jax.random.fold_in(key, 5), num_points=40, dim=3, num_clusters=4)
    frame = np.asarray(net.frame)
    theta, _ = ft.thresholds(net)
    u = np.asarray(data.x) @ frame.T
    v = np.asarray(data.targets)[np.asarray(data.labels)] @ frame.T
    split = 0.5 * np.mean((np.maximum(u, np.max(theta, 0)) - v) ** 2, axis=0)
    assert np.allclose(ft.coordinate_costs(net, data), split, rtol=1e-13)
    general_cost = ft.input_cost(net.to_general(), data)
    assert np.isclose(general_cost, split.sum(), rtol=1e-12)
    assert np.isclose(ft.input_cost(net, data, method="forward"), split.sum(), rtol=1e-12)


@pytest.mark.wrong_types
def test_truncation_map_rejects_bad_input():
    with pytest.raises(ValueError, match=r"`weights` must have shape \(M, M\)"):
        ft.truncation_map(np.eye(3), np.zeros(2), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`weights` is singular or near-singular"):
        ft.truncation_map(np.array([[1.0, 2.0], [2.0, 4.0]]), np.zeros(2), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 2\)"):
        ft.truncation_map(np.eye(2), np.zeros(2), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="`x` contains 1 NaN"):
        ft.truncation_map(np.eye(2), np.zeros(2), np.array([[np.nan, 0.0]]))


@pytest.mark.wrong_types
def test_input_layer_rejects_bad_input(key):
    net = random_adapted_net(key, 2, 2)
    with pytest.raises(ValueError, match=r"`layer` must be an int in 0..2"):
        ft.input_layer(net, np.zeros((3, 2)), 3)
    with pytest.raises(ValueError, match="`method` must be"):
        ft.input_layer(net, np.zeros((3, 2)), method="magic")
    with pytest.raises(ValueError, match="`net` must be a flowtrunc.ReLUNet"):
        ft.input_layer(np.eye(2), np.zeros((3, 2)))
    singular = ft.ReLUNet(weights=np.array([[[1.0, 1.0], [1.0, 1.0]]]), biases=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="`cumulative weights` is singular"):
        ft.input_layer(singular, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`thresholds` needs an AdaptedReLUNet"):
        ft.thresholds(net.to_general())
