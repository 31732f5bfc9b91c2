"""Shared test helpers: comparisons and small problem builders."""

import jax
import jax.numpy as jnp
import numpy as np

import flowtrunc as ft


def tree_allclose(a, b, *, rtol=1e-12, atol=1e-12) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in zip(leaves_a, leaves_b)
    )


def random_general_net(key, depth, width, dtype=jnp.float64) -> ft.ReLUNet:
    """Well-conditioned random weights: identity plus a small Gaussian perturbation."""
    kw, kb = jax.random.split(key)
    noise = jax.random.normal(kw, (depth, width, width), dtype) / width**0.5
    weights = jnp.eye(width, dtype=dtype)[None] + 0.5 * noise
    biases = 0.3 * jax.random.normal(kb, (depth, width), dtype)
    return ft.ReLUNet(weights=weights, biases=biases)


def random_adapted_net(key, depth, width, *, bias_scale=0.5, dtype=jnp.float64):
    return ft.AdaptedReLUNet.random(key, depth, width, scale_spread=0.3, bias_scale=bias_scale, dtype=dtype)


def problem(key, *, depth=3, width=2, num_points=24, num_clusters=3, bias_scale=0.6, target_offset=0.4):
    """A small adapted net and clustered data (works inside vmap)."""
    net = ft.AdaptedReLUNet.random(key, depth, width, scale_spread=0.3, bias_scale=bias_scale)
    data = ft.make_clusters(
        jax.random.fold_in(key, 1),
        num_points=num_points,
        dim=width,
        num_clusters=num_clusters,
        target_offset=target_offset,
    )
    return net, data


def numpy_effective_rhs(theta, scales, u, v, train_weights=True):
    """docs/theory.md §3 written out with loops, independently of flowtrunc."""
    depth, width = theta.shape
    num = u.shape[0]
    dtheta, dscales = np.zeros_like(theta), np.zeros_like(scales)
    for k in range(width):
        th = np.concatenate([[0.0], theta[:, k]])  # th[n] = theta^(n), th[0] = 0
        cum = np.concatenate([[1.0], scales[:, k]])  # cum[n] = D^(n), cum[0] = 1
        star_layer = int(np.argmax(theta[:, k])) + 1  # 1-based active layer
        star = th[star_layer]
        truncated = u[:, k] < star
        n = truncated.sum()
        g = (n * star - v[truncated, k].sum()) / num
        for layer in range(1, depth + 1):
            gamma, drift = 0.0, 0.0
            for m in range(1, min(layer, star_layer) + 1):
                inv_d2 = (cum[m - 1] / cum[m]) ** 2
                gamma += cum[m] ** -2
                if train_weights:
                    gamma += (th[m - 1] - th[layer]) * (th[m - 1] - star) * inv_d2
                    drift += (th[m - 1] - star) * inv_d2
            dtheta[layer - 1, k] = -g * gamma
            dscales[layer - 1, k] = -g * cum[layer] * drift
    return dtheta, dscales


def fd_error_bound(f, *, h, noise):
    """Central difference of a scalar `f(step)` at 0 and a bound on its error.

    Error model: truncation C h^2 plus evaluation noise `noise`/h (round-off and, for an
    adaptive solver, its tolerance, which does not vary smoothly with the input). The
    truncation term is measured, not guessed: D(h) - D(2h) = -3 C h^2 + noise. The bound
    is twice the sum, so it holds on any CPU whose round-off differs from ours.
    """
    central = lambda step: (f(step) - f(-step)) / (2 * step)  # noqa: E731
    fine, coarse = central(h), central(2 * h)
    truncation = abs(coarse - fine) / 3
    return fine, 2 * (truncation + noise / h)


# the small comparison the run-level tests use (seconds per run once compiled)
TINY = dict(seeds=8, points=12, clusters=2, t1=1.0, lr=0.02, saves=10, chunk_size=4, keep=2)


def cli_process(args, env_extra=None):
    """`python -m flowtrunc._cli ARGS` as a subprocess (text pipes), with extra environment."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "flowtrunc._cli", *args],
        env=env,
        # a background shell starts pytest with SIGINT ignored, and Python then installs no
        # Ctrl-C handler in the child: restore the default so Ctrl-C tests mean something
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
