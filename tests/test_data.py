import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_adapted_net

import flowtrunc as ft


def test_default_targets_are_class_means():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [5.0, 5.0]])
    data = ft.Dataset(x=x, labels=np.array([0, 0, 1]))
    assert np.allclose(data.targets, [[1.0, 2.0], [5.0, 5.0]])
    assert data.num_classes == 2 and data.num_points == 3 and data.width == 2


def test_cluster_generator_statistics():
    """Documented: class means near the centres (targets - offset), within-class std = spread."""
    spread, offset = 0.25, np.array([0.5, -1.0, 0.0])
    data = ft.make_clusters(
        jax.random.key(3),
        num_points=6000,
        num_clusters=4,
        dim=3,
        spread=spread,
        separation=2.0,
        target_offset=offset,
    )
    labels = np.asarray(data.labels)
    counts = np.bincount(labels)
    assert np.all(counts == 1500)  # balanced, deterministic labels
    centres = np.asarray(data.targets) - offset
    x = np.asarray(data.x)
    means = np.stack([x[labels == q].mean(0) for q in range(4)])
    # standard error of a class mean is spread / sqrt(1500); allow 5 of them
    assert np.max(np.abs(means - centres)) < 5 * spread / np.sqrt(1500)
    residual = x - centres[labels]
    assert abs(residual.std() - spread) < 0.02 * spread
    assert abs(np.corrcoef(residual.T)[0, 1]) < 0.05
    # separation: centres ~ N(0, separation^2); 12 values, so only a loose check
    assert 0.5 < np.std(centres) / 2.0 < 1.6


def test_npz_round_trip(tmp_path):
    data = ft.make_clusters(jax.random.key(0), num_points=12, num_clusters=3, dim=2)
    path = tmp_path / "d.npz"
    np.savez(path, x=np.asarray(data.x), labels=np.asarray(data.labels))
    loaded = ft.load_npz(path)
    assert np.allclose(loaded.x, data.x)
    np.savez(path, x=np.asarray(data.x), labels=np.asarray(data.labels), targets=np.asarray(data.targets))
    assert np.allclose(ft.load_npz(path).targets, data.targets)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=np.zeros((0, 2)), labels=np.zeros(0, int)), r"`x` is empty"),
        (
            dict(x=np.zeros((3, 2)), labels=np.array([0, 1, 3]), targets=np.zeros((2, 2))),
            r"`labels` must lie in 0..1",
        ),
        (dict(x=np.zeros((3, 2)), labels=np.array([0, -1, 1])), r"`labels` must be the integers 0..Q-1"),
        (dict(x=np.zeros((3, 2)), labels=np.array([0, 0, 2])), r"1 of 3 classes have no points \(1\)"),
        (
            dict(x=np.zeros((3, 2)), labels=np.array([0, 0, 1]), targets=np.zeros((3, 2))),
            r"1 of 3 classes have no points \(2\)",
        ),
        (dict(x=np.zeros((3, 2)), labels=np.array([0.0, 1.0, 1.0])), "`labels` must be integers"),
        (dict(x=np.zeros((3, 2), int), labels=np.array([0, 1, 1])), "`x` has dtype int"),
        (dict(x=np.zeros((3, 2)), labels=np.array([0, 1])), r"`labels` must have shape \(N,\) = \(3,\)"),
        (dict(x=np.array([[0.0, np.inf], [0, 0]]), labels=np.array([0, 0])), "`x` contains 1 NaN or inf"),
        (
            dict(x=np.zeros((3, 2)), labels=np.array([0, 1, 1]), targets=np.zeros((2, 3))),
            "`targets` has 3 features",
        ),
        (
            dict(x=np.zeros((2, 2)), labels=np.array([0, 1]), targets=np.array([[0.0, 0], [np.nan, 0]])),
            "`targets` contains 1 NaN",
        ),
    ],
)
def test_dataset_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ft.Dataset(**kwargs)


def test_npz_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ft.load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        ft.load_npz(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['labels'\]"):
        ft.load_npz(partial)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        ft.load_npz(single)


def test_generator_rejects_bad_config():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"`num_points` \(2\) must be >= `num_clusters` \(3\)"):
        ft.make_clusters(key, num_points=2, num_clusters=3)
    with pytest.raises(ValueError, match="`dim` must be a positive int"):
        ft.make_clusters(key, dim=0)
    with pytest.raises(ValueError, match="`spread` must be > 0"):
        ft.make_clusters(key, spread=0.0)


@pytest.mark.wrong_types
def test_cost_rejects_mismatched_data(key):
    net = random_adapted_net(key, 2, 3)
    data = ft.make_clusters(key, dim=2)
    with pytest.raises(ValueError, match="`data` has dimension M = 2 but the network has width 3"):
        ft.input_cost(net, data)
    with pytest.raises(ValueError, match="`data` must be a flowtrunc.Dataset"):
        ft.input_cost(net, jnp.zeros((3, 3)))


def test_staircase_statistics_in_the_frame(key):
    """Documented: in frame coordinates, centres q·separation·1 + jitter·z, points with
    std `spread` around them, targets = centres + target_offset·1, balanced labels."""
    net = random_adapted_net(key, 2, 3)
    frame = np.asarray(net.frame)
    data = ft.make_staircase(
        jax.random.key(5),
        net.frame,
        num_points=3000,
        num_clusters=3,
        spread=0.2,
        separation=2.0,
        jitter=0.0,
        target_offset=0.7,
    )
    u = np.asarray(data.x) @ frame.T
    labels = np.asarray(data.labels)
    assert np.all(np.bincount(labels) == 1000)
    for q in range(3):
        mean = u[labels == q].mean(0)
        assert np.allclose(mean, 2.0 * q, atol=5 * 0.2 / np.sqrt(1000))
        assert np.allclose(u[labels == q].std(0), 0.2, rtol=0.1)
    assert np.allclose(np.asarray(data.targets) @ frame.T, 2.0 * np.arange(3)[:, None] + 0.7, atol=1e-12)


@pytest.mark.wrong_types
def test_staircase_rejects_bad_config(key):
    frame = np.eye(2)
    with pytest.raises(ValueError, match=r"`num_points` \(2\) must be >= `num_clusters` \(3\)"):
        ft.make_staircase(key, frame, num_points=2, num_clusters=3)
    with pytest.raises(ValueError, match="`spread` must be > 0"):
        ft.make_staircase(key, frame, spread=0.0)
    with pytest.raises(ValueError, match="`num_clusters` must be a positive int"):
        ft.make_staircase(key, frame, num_clusters=0)
    with pytest.raises(ValueError, match="`frame` must have 2 dimensions"):
        ft.make_staircase(key, np.ones(2))
