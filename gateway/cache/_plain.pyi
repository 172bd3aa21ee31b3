from typing import Any

def answers(table: dict[str, Any], digests: list[str], now: float, wall_us: int,
            used: dict[str, float], valid: dict[str, int], due: list[str], left: list[int]
            ) -> list[bytes | None]: ...
def bare(items: list[Any], limit: int, starts: tuple[str, ...], others: list[int]
         ) -> list[str | None]: ...
