"""How the diagonal weights `d` of an adapted network are moved: directly, or through
`log d` (which keeps them positive). Training and the effective flow read the same word."""

PARAMETERISATIONS = ("direct", "log")


def check_parameterisation(parameterisation) -> None:
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"`parameterisation` must be 'direct' (moves d) or 'log' (moves log d), got {parameterisation!r}."
        )


def weights_flag(train_weights: bool, parameterisation: str):
    """The static flag the solvers carry: False (biases only), True (gradient flow on the
    diagonal entries `d`), or "log" (gradient flow on `log d`)."""
    check_parameterisation(parameterisation)
    if not isinstance(train_weights, bool):
        raise ValueError(f"`train_weights` must be True or False, got {train_weights!r}.")
    return "log" if train_weights and parameterisation == "log" else train_weights
