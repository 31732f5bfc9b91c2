"""A coded vocabulary: small integers that files store and jitted code compares, each with
the sentence that explains it attached (the role of diffrax's `RESULTS` on equinox's
`Enumeration`; plain `int`s here, so `seeds.npz` and NumPy read them unchanged)."""

import enum


class Codes(enum.IntEnum):
    """Members are written `name = code, "what it means"`; `member.message` is the sentence."""

    message: str

    def __new__(cls, code: int, message: str = ""):
        member = int.__new__(cls, code)
        member._value_ = code
        member.message = message
        return member

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names in code order (`names()[code]`)."""
        return tuple(member.name for member in sorted(cls))
