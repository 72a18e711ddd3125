"""argparse `type=` converters shared by the subcommands: each names what it expected in the one-line error."""

from __future__ import annotations

import argparse
import math


def argtype(convert, ok, expected: str):
    """A converter: `convert(text)` must succeed and `ok(value)` hold, else "expected EXPECTED, got 'TEXT'"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


def at_least(minimum: int):
    """An integer converter refusing values below `minimum`."""
    return argtype(int, lambda v: v >= minimum, f"an integer ≥ {minimum}")


positive_int = at_least(1)
count = at_least(0)  # where 0 means something, and the option's help says what
port = argtype(int, lambda v: 0 <= v <= 65535, "a port in 0..65535")
seconds = argtype(float, lambda v: 0 < v < math.inf, "a number of seconds > 0")
non_negative = argtype(float, lambda v: 0 <= v < math.inf, "a number >= 0")
positive = argtype(float, lambda v: 0 < v < math.inf, "a number > 0")
