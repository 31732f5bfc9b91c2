"""Array type aliases used in public signatures (one place, as in diffrax)."""

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

__all__ = ["Array", "ArrayLike", "Bool", "Float", "Int", "PRNGKeyArray"]
