"""Per-seed result codes: under `vmap` a failing seed is reported, never fatal to the batch."""

import numpy as np

from ._codes import Codes


class RESULTS(Codes):
    successful = 0, ""
    max_segments_reached = 1, "the segment cap was reached before the final time; raise `max_segments`"
    solver_failed = (
        2,
        "the ODE solver failed inside a segment (step cap or step-size collapse); raise `max_steps` "
        "or loosen `rtol`/`atol`",
    )
    nonfinite_state = 3, "the state became NaN or inf; check the network and data of this seed"
    diverged = 4, "training diverged (NaN, inf or exploding cost); lower the learning rate"
    unstable = (
        5,
        "the learning rate exceeds the stability bound of gradient descent, at the start (2/λ_max) "
        "or along the run (2/κ on the flow's state; `unstable_from` says when); lower it below the bound",
    )
    invalid_input = (
        6,
        "an input that is checked only on concrete arrays was invalid under jit/vmap (`ts` unsorted, "
        "NaN or negative; a non-positive scale; a frame that is not orthogonal; NaN or inf data); "
        "call the function once outside jit on this seed to see which",
    )
    double_sliding = (
        7,
        "the usual cost's flow reached a state that slides on two surfaces at once (θ* held on a data "
        "coordinate while another layer's threshold reaches it, or a tie of two layers on a data "
        "coordinate that neither crosses), which the event loop does not follow; the state up to "
        "then is in the event list",
    )


def describe(result) -> list[str]:
    """Readable messages for a scalar or batch of result codes (empty string = success)."""
    codes = np.atleast_1d(np.asarray(result))
    return [RESULTS(int(code)).message for code in codes.ravel()]
