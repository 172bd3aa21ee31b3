"""A string that never prints itself."""

from __future__ import annotations


class Secret:
    """Wraps a secret value; ``repr``/``str`` are masked so it cannot leak into logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        from gateway.crypto.compare import constant_time_equal

        return isinstance(other, Secret) and constant_time_equal(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))
