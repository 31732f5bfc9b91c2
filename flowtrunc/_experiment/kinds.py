"""The kind of solution one coordinate shows over a run [0, t1], read off a trajectory.

The same rule reads the effective flow and training, so their disagreement measures the
prediction, not the rule. Per coordinate, first match wins:

- `truncates_all`: every point is truncated at t1 (n = N);
- `releases`: fewer points truncated at t1 than at 0 (θ* fell through data);
- `kink`: θ* moved and ended on a data coordinate, at rest (within `tol`);
- `still`: θ* did not move and no point changed side;
- `relaxes`: θ* moved toward the mean truncated target and stopped between data
  coordinates (or is still moving there) — the asymptote of docs/theory.md §7.

Separately, `switched`: the active layer (the one holding θ*) differs at t1 from t = 0.
"""

import jax.numpy as jnp

from .._codes import Codes


class KIND(Codes):
    """The kind of solution one coordinate shows over [0, t1] (first match wins)."""

    truncates_all = 0, "every point is truncated at t1 (n = N)"
    releases = 1, "fewer points truncated at t1 than at 0 (θ* fell through data)"
    kink = 2, "θ* moved and ended on a data coordinate, at rest"
    still = 3, "θ* did not move and no point changed side"
    relaxes = (
        4,
        "θ* moved toward the mean truncated target and stopped between data coordinates (or still moves)",
    )


SOLUTION_KINDS = KIND.names()


def solution_kinds(thresholds, u, counts, tol):
    """`(kind (M,), switched (M,))` of a trajectory: `thresholds` `(T, L, M)` at saved
    times, data coordinates `u` `(N, M)`, truncated `counts` `(T, M)`, and the resolution
    `tol` in θ (training reaches the flow only to O(lr))."""
    star = jnp.max(thresholds, axis=1)  # (T, M)
    first, last, before_last = star[0], star[-1], star[-2]
    moved = jnp.abs(last - first) > tol
    at_rest = jnp.abs(last - before_last) <= tol
    on_data = jnp.min(jnp.abs(u - last[None]), axis=0) <= tol
    kind = jnp.select(
        [
            counts[-1] == u.shape[0],
            counts[-1] < counts[0],
            moved & at_rest & on_data,
            ~moved & (counts[-1] == counts[0]),
        ],
        [KIND.truncates_all, KIND.releases, KIND.kink, KIND.still],
        KIND.relaxes,
    )
    switched = jnp.argmax(thresholds[-1], axis=0) != jnp.argmax(thresholds[0], axis=0)
    return kind.astype(jnp.int32), switched
