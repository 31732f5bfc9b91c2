"""How the diagonal weights `d` of an adapted network are moved: directly, or through
`log d` (which keeps them positive). Training and the effective flow read the same word."""

PARAMETERISATIONS = ("direct", "log")


def check_parameterisation(parameterisation) -> None:
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"`parameterisation` must be 'direct' (moves d) or 'log' (moves log d), got {parameterisation!r}."
        )


# how the solvers move the diagonal weights: not at all (biases only), d, or log d
WEIGHT_MOTIONS = ("frozen", "direct", "log")


def weight_motion(train_weights: bool, parameterisation: str) -> str:
    """The static word the solvers carry, one of `WEIGHT_MOTIONS`, from the public pair
    (`train_weights`, `parameterisation`)."""
    check_parameterisation(parameterisation)
    if not isinstance(train_weights, bool):
        raise ValueError(f"`train_weights` must be True or False, got {train_weights!r}.")
    return parameterisation if train_weights else "frozen"
