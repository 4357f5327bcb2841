"""What the project's command-line tools share: argparse types that refuse a bad number in one line."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(low: int, high: int | None = None, what: str = "") -> Callable[[str], int]:
    """An argparse `type`: a whole number from `low` (to `high`), else one line saying what is allowed."""
    allowed = f"{low}-{high}" if high is not None else f"at least {low}"

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; allowed: {allowed}{what}") from None
        if n < low or (high is not None and n > high):
            raise argparse.ArgumentTypeError(f"{n}: allowed {allowed}{what}")
        return n

    return parse
