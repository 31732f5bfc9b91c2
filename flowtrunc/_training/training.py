"""Training the real network by gradient descent (optax), for comparison with the flow.

The cost is the input-layer cost computed from the real forward pass,
`x̃^(L) = (W^(L))^{-1}(x^(L) − b^(L))`, with autodiff gradients (`cost="input"`), or the
usual cost `(1/2N) Σ |A(x^(L)) − y|²` after an affine output layer `A` (`cost="output"`,
docs/theory.md §6; the output layer trains too unless frozen).

- `mode="adapted"`: parameters are the diagonal entries `d_l` and biases `b_l`; the
  frame is fixed (docs/theory.md §3 exactly).
- `mode="unconstrained"`: full matrices `W_l` and biases, started from the adapted net.

Time: with plain gradient descent (`optax.sgd(lr)`, the default) step k is `t = k·lr`.
Other optax optimizers and minibatch SGD use the same nominal time `k·lr` (for minibatch
SGD the expected step is the full gradient step; for adaptive optimizers it is only a
label).
"""

import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax

from .._linalg import matmul, symmetric_eigenvalues
from .._model.cost import check_data, input_cost
from .._model.data import Dataset
from .._model.network import AdaptedReLUNet, ReLUNet
from .._model.output_layer import (
    AdaptedOutputLayer,
    OutputLayer,
    output_cost,
    output_frame_departure,
    pulled_back,
)
from .._model.parameterisation import check_parameterisation
from .._results import RESULTS
from .._validate import check_positive_int, is_concrete, traced_inputs_ok, with_input_check

MODES = ("adapted", "unconstrained")
COSTS = ("input", "output")


class TrainableParams(NamedTuple):
    """The parameters gradient descent moves, by name (leaves in this order)."""

    hidden: Any  # the hidden layers' weights: d or log d (adapted), the matrices W (unconstrained)
    biases: Any  # the hidden layers' biases b
    output: Any = None  # a trained output layer (the usual cost), else None


def trainable_params(
    net: AdaptedReLUNet, mode: str, parameterisation: str = "direct", output_layer=None
) -> TrainableParams:
    """The parameters gradient descent moves: `d` or `log d` and `b` (adapted), or `W` and
    `b` (unconstrained), and a trainable `output_layer` when one is given: an
    `AdaptedOutputLayer` moves `d_o` (or `log d_o`) and `b_o` in adapted mode and its full
    weight in unconstrained mode."""
    if mode == "adapted":
        hidden = jnp.log(net.scales) if parameterisation == "log" else net.scales
    else:
        hidden = net.layer_weights()
    if isinstance(output_layer, AdaptedOutputLayer):
        if mode == "unconstrained":
            output_layer = output_layer.to_general()
        elif parameterisation == "log":  # the trainable leaf is log d_o
            output_layer = eqx.tree_at(lambda layer: layer.scales, output_layer, jnp.log(output_layer.scales))
    return TrainableParams(hidden, net.biases, output_layer)


def training_cost(net, mode, params, data, parameterisation="direct", frozen_layer=None):
    """The cost `train` descends at `params`: the usual cost after the output layer (the
    trainable one in `params`, else `frozen_layer`), or the input-layer cost if neither."""
    model = rebuild(net, mode, params, parameterisation)
    layer = _layer_of(params, frozen_layer, parameterisation)
    if layer is None:
        return input_cost(model, data, method="forward")
    return output_cost(model, layer, data)


def rebuild(net: AdaptedReLUNet, mode: str, params, parameterisation: str = "direct"):
    """The network with trainable `params` (hidden layers first) and the fixed parts of `net`."""
    if mode == "adapted":
        scales = jnp.exp(params.hidden) if parameterisation == "log" else params.hidden
        return AdaptedReLUNet(frame=net.frame, scales=scales, biases=params.biases)
    return ReLUNet(weights=params.hidden, biases=params.biases)


def check_mode(mode, parameterisation: str = "direct"):
    if mode not in MODES:
        raise ValueError(f"`mode` must be 'adapted' or 'unconstrained', got {mode!r}.")
    check_parameterisation(parameterisation)
    if mode == "unconstrained" and parameterisation == "log":
        raise ValueError(
            "`parameterisation='log'` acts on the diagonal entries d of adapted weights; "
            "unconstrained training moves full matrices. Use mode='adapted' or "
            "parameterisation='direct'."
        )


def _check_cost(cost, output_layer, train_output, net):
    """The output layer `train` uses (cast to the net's dtype), or None for the input cost;
    rejects options that contradict `cost`."""
    if cost not in COSTS:
        raise ValueError(
            f"`cost` must be 'input' (the input-layer cost) or 'output' (the usual cost after an "
            f"output layer), got {cost!r}."
        )
    if cost == "input":
        if output_layer is not None or train_output is not None:
            given = "`output_layer`" if output_layer is not None else "`train_output`"
            raise ValueError(
                f"{given} belongs to the usual cost, but cost='input' (the input-layer cost has no "
                "output layer). Pass cost='output', or drop it."
            )
        return None
    if output_layer is None:
        raise ValueError(
            "cost='output' needs `output_layer`, the affine layer after the last hidden layer; "
            f"e.g. OutputLayer.random(key, {net.width}) (or OutputLayer(weight, bias))."
        )
    kinds = (OutputLayer, AdaptedOutputLayer)
    if not isinstance(output_layer, kinds) or output_layer.bias.shape != (net.width,):
        raise ValueError(
            f"`output_layer` must be an OutputLayer or AdaptedOutputLayer of width {net.width} (the "
            f"net's), got {type(output_layer).__name__}"
            + (f" of width {output_layer.bias.shape[0]}" if isinstance(output_layer, kinds) else "")
            + "."
        )
    dtype = net.biases.dtype
    if isinstance(output_layer, AdaptedOutputLayer):
        return AdaptedOutputLayer(
            *(a.astype(dtype) for a in (output_layer.frame, output_layer.scales, output_layer.bias))
        )
    return OutputLayer(output_layer.weight.astype(dtype), output_layer.bias.astype(dtype))


def _check_output_start(output_start, output_layer, mode, net):
    """`output_start` cast to the net's dtype (or None); it needs an adapted `output_layer`
    (its frame) and unconstrained training (its full weight trains)."""
    if output_start is None:
        return None
    if not isinstance(output_layer, AdaptedOutputLayer) or mode != "unconstrained":
        raise ValueError(
            "`output_start` (a general output layer to train from) needs cost='output' with an "
            "AdaptedOutputLayer as `output_layer` (the frame its departure is read in) and "
            "mode='unconstrained' (its full weight trains). Pass both, or drop output_start."
        )
    if not isinstance(output_start, OutputLayer) or output_start.bias.shape != (net.width,):
        raise ValueError(
            f"`output_start` must be an OutputLayer of width {net.width} (the net's), got "
            f"{type(output_start).__name__}."
        )
    dtype = net.biases.dtype
    return OutputLayer(output_start.weight.astype(dtype), output_start.bias.astype(dtype))


def _layer_of(params, frozen_layer, parameterisation="direct"):
    """The output layer in use: the trainable one in `params` (`log d_o` back to `d_o`),
    else `frozen_layer` (None for the input-layer cost)."""
    layer = params.output
    if layer is None:
        return frozen_layer
    if isinstance(layer, AdaptedOutputLayer) and parameterisation == "log":
        return eqx.tree_at(lambda out: out.scales, layer, jnp.exp(layer.scales))
    return layer


def _output_frame(output_layer):
    """The output frame `Q` an adapted output layer starts on (None for any other)."""
    return output_layer.fixed_frame if isinstance(output_layer, AdaptedOutputLayer) else None


def _split_layer(output_layer, train_output):
    """`(trainable, frozen)`: the output layer in the one role it plays (or None)."""
    if output_layer is None:
        return None, None
    return (output_layer, None) if train_output else (None, output_layer)


class TrainingRun(eqx.Module):
    """Saved observables of a training run, at `ts = (0, s, 2s, ...)·lr`, `s = save_every`.

    `thresholds` `(S, L, M)` and `scales` (cumulative) are read in the initial frame R:
    `F = W^(l) Rᵀ`, `scales = diag F`, `thresholds = −b^(l)/diag F` (exact in adapted
    mode). `drift` `(S, L)` is `‖F − diag F‖_F / ‖diag F‖`, zero on the adapted family.
    `n_truncated` `(S, M)` counts points whose unit k is inactive (pre-activation <= 0)
    in some layer of the real forward pass. `result` is a `RESULTS` code; `diverged_step` is the first bad
    step or -1. Values after a divergence are NaN. `net` is the final network.

    The cost's metric and targets in the input layer (docs/theory.md §6): `metric_eigenvalues`
    `(S, 2)`, the smallest and largest eigenvalue of `G = (W_o W^(L))ᵀ(W_o W^(L))`, and
    `pulled_targets` `(S, Q, M)`, `ȳ_q = (W_o W^(L))^{-1}(y_q − W_o b^(L) − b_o)`; for the
    input-layer cost `G = I` and `ȳ` are the dataset's targets. `output_layer` is the final
    output layer (None for the input-layer cost). `output_departure` `(S,)` is
    `‖Qᵀ W_o − diag(Qᵀ W_o)‖_F / ‖diag(Qᵀ W_o)‖` when the run started from an
    `AdaptedOutputLayer` with frame `Q` (0 while it stays adapted), NaN otherwise.
    """

    ts: jax.Array
    cost: jax.Array
    cumulative_weights: jax.Array
    cumulative_biases: jax.Array
    thresholds: jax.Array
    scales: jax.Array
    drift: jax.Array
    n_truncated: jax.Array
    result: jax.Array
    diverged_step: jax.Array
    net: eqx.Module
    metric_eigenvalues: jax.Array
    pulled_targets: jax.Array
    output_departure: jax.Array
    output_layer: eqx.Module | None = None

    @property
    def metric_condition(self) -> jax.Array:
        """`(S,)` condition number of the cost's metric G at each save (1: input-layer cost)."""
        return self.metric_eigenvalues[:, 1] / self.metric_eigenvalues[:, 0]


def truncated_counts(net, x):
    """Per unit k, the number of points with a pre-activation <= 0 in some layer (at 0,
    ReLU's derivative is 0: gradient descent treats the point as truncated)."""

    def step(h, wb):
        weight, bias = wb
        pre = matmul(h, weight.T) + bias[None]
        return jnp.maximum(pre, 0.0), pre <= 0

    _, inactive = lax.scan(step, x, (net.layer_weights(), net.biases))
    return jnp.sum(jnp.any(inactive, axis=0), axis=0).astype(jnp.int32)


def observe(net, data: Dataset, frame, output_layer=None, output_frame=None):
    """Cost, cumulative parameters, frame-read thresholds, drift, truncated counts, the
    cost's metric eigenvalues and pulled-back targets (the usual cost after `output_layer`
    if given, else the input-layer cost: `G = I`), and the output layer's departure from the
    adapted family of `output_frame` (NaN without one)."""
    w_cum, b_cum = net.cumulative()
    if output_layer is None:
        cost = input_cost(net, data, method="forward")
        extremes = jnp.ones(2, b_cum.dtype)
        pulled = data.targets.astype(b_cum.dtype)
    else:
        cost = output_cost(net, output_layer, data)
        metric, pulled = pulled_back(net, output_layer, data)
        eigenvalues = symmetric_eigenvalues(metric)
        extremes = jnp.stack([eigenvalues[0], eigenvalues[-1]])
    in_frame = matmul(w_cum, frame.T[None])
    diagonal = jnp.diagonal(in_frame, axis1=1, axis2=2)
    off = in_frame - jax.vmap(jnp.diag)(diagonal)
    drift = jnp.linalg.norm(off, axis=(1, 2)) / jnp.linalg.norm(diagonal, axis=1)
    return dict(
        cost=cost,
        cumulative_weights=w_cum,
        cumulative_biases=b_cum,
        thresholds=-b_cum / diagonal,
        scales=diagonal,
        drift=drift,
        n_truncated=truncated_counts(net, data.x),
        metric_eigenvalues=extremes,
        pulled_targets=pulled,
        output_departure=(
            jnp.full((), jnp.nan, b_cum.dtype)
            if output_frame is None
            else output_frame_departure(output_layer.weight, output_frame)
        ),
    )


def stability_bound(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    mode: str = "adapted",
    parameterisation: str = "direct",
    iterations: int = 50,
    cost: str = "input",
    output_layer: OutputLayer | AdaptedOutputLayer | None = None,
    train_output: bool | None = None,
):
    r"""Largest stable gradient-descent step, `2/λ_max`, with λ_max the top eigenvalue of the
    Hessian of the cost in the trainable parameters at `net` (the fastest rate of the
    linearised gradient flow), by power iteration on Hessian-vector products. The
    parameters and cost are those `train` uses with the same arguments (`parameterisation`:
    d or log d; `cost`, `output_layer`, `train_output`: see `train`)."""
    check_mode(mode, parameterisation)
    check_positive_int("iterations", iterations)
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(
            f"`stability_bound` takes the AdaptedReLUNet training starts from, got {type(net).__name__}."
        )
    check_data(net, data)
    output_layer = _check_cost(cost, output_layer, train_output, net)
    train_output = True if train_output is None else bool(train_output)
    return stability_bound_unchecked(
        net, data, mode, iterations, parameterisation, output_layer, train_output
    )


@eqx.filter_jit
def stability_bound_unchecked(
    net, data, mode, iterations, parameterisation="direct", output_layer=None, train_output=True
):
    trainable, frozen = _split_layer(output_layer, train_output)
    params = trainable_params(net, mode, parameterisation, trainable)

    def cost(p):
        return training_cost(net, mode, p, data, parameterisation, frozen)

    def hvp(v):
        return jax.jvp(jax.grad(cost), (params,), (v,))[1]

    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(tree)))

    def power(v, _):
        w = hvp(v)
        return jax.tree.map(lambda a: a / (norm(w) + 1e-30), w), None

    start = jax.tree.map(lambda a: jnp.ones_like(a) / jnp.sqrt(a.size), params)
    v, _ = lax.scan(power, start, None, length=iterations)
    top = jnp.abs(sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hvp(v)))))
    return 2.0 / top


def train(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    lr: float,
    steps: int,
    save_every: int = 1,
    mode: str = "adapted",
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = None,
    key=None,
    divergence_factor: float = 1e6,
    check_stability: bool = True,
    train_weights: bool = True,
    parameterisation: str = "direct",
    start: ReLUNet | None = None,
    cost: str = "input",
    output_layer: OutputLayer | AdaptedOutputLayer | None = None,
    train_output: bool | None = None,
    output_start: OutputLayer | None = None,
) -> TrainingRun:
    """Trains the real network on the input-layer cost (or the usual cost after an output
    layer) with optax, in a `lax.scan`.

    **Arguments:**

    - `net`: the adapted network at t = 0 (also the start in unconstrained mode).
    - `data`: a `Dataset` of matching width.
    - `lr`: learning rate (> 0); `steps` (> 0) steps; observables every `save_every` steps
      (must divide `steps`).
    - `mode`: `"adapted"` or `"unconstrained"` (see the module docstring).
    - `optimizer`: any `optax.GradientTransformation` (default `optax.sgd(lr)`).
    - `batch_size`, `key`: minibatch SGD with batches drawn without replacement each step
      from `key` (default: full batch).
    - `divergence_factor`: a cost above this multiple of the initial cost, NaN/inf, or
      (adapted mode) a scale `d_l <= 0` marks the seed diverged; its parameters stop
      there. Unstable steps are often self-limiting in cost (θ* leaves the data and the
      gradient vanishes), but they drive a scale through zero first.
    - `check_stability`: warn when `lr` exceeds `stability_bound` (concrete inputs only).
    - `train_weights`: False trains the biases only (the weights keep their initial,
      adapted values in either mode), the counterpart of `solve_effective`'s frozen mode.
    - `parameterisation`: steps on the diagonal entries `d_l` (`"direct"`, docs/theory.md §3)
      or on `log d_l` (`"log"`, adapted mode only; the scales then stay positive), the
      counterparts of `solve_effective`'s.
    - `start`: unconstrained mode only, a general `ReLUNet` to start from instead of `net`
      (e.g. `off_adapted(key, net, eps)`); `net` then supplies only the frame in which
      thresholds, scales and drift are read (e.g. `nearest_adapted(start)`).
    - `cost`: `"input"` (default), the input-layer cost of docs/theory.md §6; or `"output"`, the usual
      cost `(1/2N) Σ |A(x^(L)) − y|²` after `output_layer` `A` (an `OutputLayer`), with the
      dataset's targets read as output-space targets `y_q`. The run records the metric
      `G = (W_o W^(L))ᵀ(W_o W^(L))` (extreme eigenvalues) and the pulled-back targets `ȳ`.
    - `train_output`: cost `"output"` only; whether the output layer trains with the hidden
      layers (default True) or stays frozen.
    - `output_start`: with an `AdaptedOutputLayer` in unconstrained mode, a general
      `OutputLayer` whose full weight trains from (e.g. the adapted weight perturbed), as
      `start` is for the hidden layers; `output_layer` then supplies only the output frame
      `Q` from which `output_departure` is measured.

    **Returns:** a `TrainingRun`. `vmap` over seeds reports divergence per seed.
    """
    check_mode(mode, parameterisation)
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(
            f"`train` starts from an AdaptedReLUNet (both modes), got {type(net).__name__}; "
            "build one with AdaptedReLUNet(frame=..., scales=..., biases=...)."
        )
    check_data(net, data)
    output_layer = _check_cost(cost, output_layer, train_output, net)
    train_output = True if train_output is None else bool(train_output)
    output_start = _check_output_start(output_start, output_layer, mode, net)
    if start is not None:
        if mode != "unconstrained":
            raise ValueError(
                "`start` (a general network to train from) needs mode='unconstrained': adapted "
                "training keeps the weights on the family. Pass mode='unconstrained'."
            )
        if not isinstance(start, ReLUNet) or start.biases.shape != net.biases.shape:
            raise ValueError(
                f"`start` must be a ReLUNet with the shapes of `net` (L={net.depth}, M={net.width}), "
                f"got {type(start).__name__}."
            )
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    check_positive_int("steps", steps)
    check_positive_int("save_every", save_every)
    if steps % save_every:
        raise ValueError(
            f"`save_every` ({save_every}) must divide `steps` ({steps}); e.g. steps="
            f"{(steps // save_every + 1) * save_every}."
        )
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"`optimizer` must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
            f"got {type(optimizer).__name__}."
        )
    if batch_size is not None:
        if not isinstance(batch_size, int) or not 1 <= batch_size <= data.num_points:
            raise ValueError(f"`batch_size` must be an int in 1..{data.num_points}, got {batch_size!r}.")
        if key is None:
            raise ValueError("minibatch SGD needs `key` to draw its batches; pass jax.random.key(seed).")
    if not divergence_factor > 1:
        raise ValueError(f"`divergence_factor` must be > 1, got {divergence_factor!r}.")
    if check_stability and is_concrete(net.scales, net.biases, data.x):
        bound = float(
            stability_bound_unchecked(
                net,
                data,
                mode if train_weights else "adapted",
                50,
                parameterisation,
                output_layer if output_start is None else output_start,
                train_output,
            )
        )
        if lr > bound:
            warnings.warn(
                f"lr = {lr} exceeds the estimated stability bound 2/λ_max = {bound:.4g} of "
                "gradient descent at the initial point; the run may diverge.",
                stacklevel=2,
            )
    key = jax.random.key(0) if key is None else key
    # lr and the factor travel as arrays and the default optimizer is built inside the
    # jitted function, so a new lr does not recompile.
    dtype = net.biases.dtype
    run = _train(
        net,
        data,
        jnp.asarray(lr, dtype),
        steps,
        save_every,
        mode,
        optimizer,
        batch_size,
        key,
        jnp.asarray(divergence_factor, dtype),
        bool(train_weights),
        parameterisation,
        start,
        output_layer,
        train_output,
        output_start,
    )
    return with_input_check(run, traced_inputs_ok(net, data))


@eqx.filter_jit
def _train(
    net,
    data,
    lr,
    steps,
    save_every,
    mode,
    optimizer,
    batch_size,
    key,
    divergence_factor,
    train_weights,
    parameterisation="direct",
    start=None,
    output_layer=None,
    train_output=True,
    output_start=None,
):
    frame = net.fixed_frame
    output_frame = _output_frame(output_layer)
    if output_start is not None:  # the full weight trains from there, read in Q's frame
        output_layer = output_start
    trainable, frozen = _split_layer(output_layer, train_output)
    params = trainable_params(net, mode, parameterisation, trainable)
    if start is not None:
        params = params._replace(hidden=start.layer_weights(), biases=start.biases)
    optimizer = optax.sgd(lr) if optimizer is None else optimizer

    def batch_cost(p, batch_key):
        if batch_size is None:
            batch = data
        else:
            index = jax.random.choice(batch_key, data.num_points, (batch_size,), replace=False)
            batch = Dataset(x=data.x[index], labels=data.labels[index], targets=data.targets)
        return training_cost(net, mode, p, batch, parameterisation, frozen)

    initial_cost = training_cost(net, mode, params, data, parameterisation, frozen)

    def step(carry, step_key):
        p, opt_state, bad_step, index = carry
        loss, grads = jax.value_and_grad(batch_cost)(p, step_key)
        if not train_weights:
            grads = grads._replace(hidden=jnp.zeros_like(grads.hidden))
            if isinstance(grads.output, AdaptedOutputLayer):  # d_o is a weight too
                grads = grads._replace(
                    output=eqx.tree_at(lambda g: g.scales, grads.output, 0 * grads.output.scales)
                )
        updates, new_state = optimizer.update(grads, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(new_p)]))
        ok = jnp.isfinite(loss) & (loss <= divergence_factor * initial_cost) & finite
        if mode == "adapted" and parameterisation == "direct":  # a scale through zero leaves the family
            ok = ok & jnp.all(new_p.hidden > 0)
        alive = bad_step < 0
        bad_step = jnp.where(alive & ~ok, index, bad_step)
        advance = alive & ok
        p = jax.tree.map(lambda new, old: jnp.where(advance, new, old), new_p, p)
        opt_state = jax.tree.map(lambda new, old: jnp.where(advance, new, old), new_state, opt_state)
        return (p, opt_state, bad_step, index + 1), None

    def save_block(carry, block_keys):
        carry, _ = lax.scan(step, carry, block_keys)
        p, _, bad_step, _ = carry
        layer = _layer_of(p, frozen, parameterisation)
        seen = observe(rebuild(net, mode, p, parameterisation), data, frame, layer, output_frame)
        blank = lambda a: jnp.where(bad_step < 0, a, jnp.nan)  # noqa: E731
        seen = {name: value if name == "n_truncated" else blank(value) for name, value in seen.items()}
        return carry, seen

    num_saves = steps // save_every
    keys = jax.random.split(key, steps).reshape((num_saves, save_every))
    start = (params, optimizer.init(params), jnp.array(-1, jnp.int32), jnp.array(0, jnp.int32))
    first = observe(
        net if mode == "adapted" else rebuild(net, mode, params),
        data,
        frame,
        _layer_of(params, frozen, parameterisation),
        output_frame,
    )
    final, saved = lax.scan(save_block, start, keys)
    history = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, saved)
    dtype = history["cost"].dtype
    bad_step = final[2]
    return TrainingRun(
        ts=jnp.arange(num_saves + 1, dtype=dtype) * (save_every * lr),
        result=jnp.where(bad_step < 0, RESULTS.successful, RESULTS.diverged).astype(jnp.int32),
        diverged_step=bad_step,
        net=rebuild(net, mode, final[0], parameterisation),
        output_layer=_layer_of(final[0], frozen, parameterisation),
        **history,
    )
