import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_adapted_net, random_general_net, tree_allclose

import flowtrunc as ft


def numpy_forward(weights, biases, x):
    """Independent NumPy forward pass: every hidden layer."""
    layers = []
    for w, b in zip(np.asarray(weights), np.asarray(biases)):
        x = np.maximum(x @ w.T + b, 0.0)
        layers.append(x)
    return layers


def test_general_forward_matches_numpy(key):
    net = random_general_net(key, 4, 3)
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (20, 3)))
    expected = numpy_forward(net.weights, net.biases, x)
    assert np.allclose(net(x), expected[-1], rtol=1e-14, atol=1e-14)
    assert np.allclose(net.hidden_layers(x), np.stack(expected), rtol=1e-14, atol=1e-14)
    assert np.allclose(net(x[0]), expected[-1][0], rtol=1e-14, atol=1e-14)


def test_adapted_structure_and_general_equivalence(key):
    net = random_adapted_net(key, 3, 4)
    weights = net.layer_weights()
    assert np.allclose(weights[0], np.diag(net.scales[0]) @ net.frame, atol=1e-15)
    for layer in range(1, 3):
        assert np.allclose(weights[layer], np.diag(net.scales[layer]), atol=0)
    general = net.to_general()
    x = jax.random.normal(jax.random.fold_in(key, 2), (10, 4))
    assert np.allclose(net(x), general(x), rtol=1e-14, atol=1e-14)
    assert tree_allclose(net.cumulative(), general.cumulative())


def test_random_adapted_distribution():
    """Documented: Haar frame (orthogonal, E[R] = 0), log-normal scales, Gaussian biases."""
    keys = jax.random.split(jax.random.key(7), 400)
    nets = eqx.filter_vmap(lambda k: ft.AdaptedReLUNet.random(k, 3, 3, scale_spread=0.2))(keys)
    frames = np.asarray(nets.frame)
    gram = np.einsum("sij,sik->sjk", frames, frames)
    assert np.allclose(gram, np.eye(3), atol=1e-12)
    # Haar: each entry has mean 0 and variance 1/M; tolerance 4 standard errors.
    assert np.all(np.abs(frames.mean(0)) < 4 * np.sqrt(1 / 3 / 400))
    assert np.allclose(frames.var(0), 1 / 3, atol=0.06)
    log_scales = np.log(np.asarray(nets.scales))
    assert abs(log_scales.mean()) < 4 * 0.2 / np.sqrt(log_scales.size)
    assert abs(log_scales.std() - 0.2) < 0.01
    assert abs(np.asarray(nets.biases).std() - 0.1) < 0.005


def test_construct_inside_vmap_and_jit(key):
    keys = jax.random.split(key, 5)
    nets = [random_adapted_net(k, 2, 3) for k in keys]
    frames, scales, biases = (jnp.stack([getattr(n, f) for n in nets]) for f in ("frame", "scales", "biases"))
    batch = eqx.filter_vmap(lambda r, d, b: ft.AdaptedReLUNet(frame=r, scales=d, biases=b))(
        frames, scales, biases
    )
    assert batch.scales.shape == (5, 2, 3)
    x = jax.random.normal(key, (7, 3))
    out = eqx.filter_vmap(lambda net: net(x))(batch)
    assert np.allclose(out[2], nets[2](x), atol=1e-14)
    jitted = eqx.filter_jit(lambda w, b: ft.ReLUNet(weights=w, biases=b)(x))
    general = random_general_net(key, 2, 3)
    assert np.allclose(jitted(general.weights, general.biases), general(x), atol=1e-14)


def test_frame_gets_no_gradient(key):
    net = random_adapted_net(key, 2, 3)
    x = jax.random.normal(key, (5, 3))
    grads = eqx.filter_grad(lambda n: jnp.sum(n(x) ** 2))(net)
    assert np.all(np.asarray(grads.frame) == 0)
    assert np.any(np.asarray(grads.scales) != 0)


R2 = np.eye(2)
GOOD = dict(frame=R2, scales=np.ones((3, 2)), biases=np.zeros((3, 2)))


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(scales=np.ones((3, 2), int)), "`scales` has dtype int"),
        (dict(scales=np.ones((3, 3))), r"`scales` must have shape \(L, M\)"),
        (dict(biases=np.zeros((2, 2))), "`scales` has 3 layers but `biases` has 2"),
        (dict(frame=np.eye(3)), r"`frame` must have shape \(M, M\)"),
        (dict(frame=np.array([[1.0, 0.1], [0.0, 1.0]])), "`frame` is not orthogonal"),
        (dict(scales=np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])), "`scales` must be strictly positive"),
        (dict(biases=np.array([[np.nan, 0], [0, 0], [0, 0]])), "`biases` contains 1 NaN or inf"),
        (dict(frame=np.array([[np.inf, 0], [0, 1.0]])), "`frame` contains 1 NaN or inf"),
        (dict(biases=np.zeros(2)), "`biases` must have 2 dimensions"),
    ],
)
def test_adapted_rejects_bad_input(changes, match):
    with pytest.raises(ValueError, match=match):
        ft.AdaptedReLUNet(**{**GOOD, **changes})


def test_orthogonality_tolerance_depends_on_dtype():
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    slightly_off = rotation * (1 + 1e-6)
    ft.AdaptedReLUNet(
        frame=slightly_off.astype(np.float32),
        scales=np.ones((1, 2), np.float32),
        biases=np.zeros((1, 2), np.float32),
    )
    with pytest.raises(ValueError, match="not orthogonal"):
        ft.AdaptedReLUNet(frame=slightly_off, scales=np.ones((1, 2)), biases=np.zeros((1, 2)))


@pytest.mark.parametrize(
    "weights, biases, match",
    [
        (np.ones((2, 2, 3)), np.zeros((2, 2)), r"`weights` must have shape \(L, M, M\)"),
        (np.ones((3, 2, 2)), np.zeros((2, 2)), "`weights` has 3 layers but `biases` has 2"),
        (np.ones((2, 2, 2), dtype=int), np.zeros((2, 2)), "`weights` has dtype int"),
        (np.full((1, 2, 2), np.nan), np.zeros((1, 2)), "`weights` contains 4 NaN"),
        (np.ones((2, 2)), np.zeros((2, 2)), "`weights` must have 3 dimensions"),
    ],
)
def test_general_rejects_bad_input(weights, biases, match):
    with pytest.raises(ValueError, match=match):
        ft.ReLUNet(weights=weights, biases=biases)


@pytest.mark.wrong_types
def test_random_rejects_bad_config(key):
    with pytest.raises(ValueError, match="`depth` must be a positive int"):
        ft.AdaptedReLUNet.random(key, 0, 2)
    with pytest.raises(ValueError, match="`width` must be a positive int"):
        ft.AdaptedReLUNet.random(key, 2, 2.5)
    with pytest.raises(ValueError, match="`scale_spread` and `bias_scale` must be >= 0"):
        ft.AdaptedReLUNet.random(key, 2, 2, bias_scale=-1.0)


@pytest.mark.wrong_types
def test_forward_rejects_wrong_width(key):
    with pytest.raises(ValueError, match="`x` has 3 features but the network has width 2"):
        random_adapted_net(key, 2, 2)(np.zeros((4, 3)))
