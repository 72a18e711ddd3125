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


positive_int = argtype(int, lambda v: v >= 1, "a positive integer")
count = argtype(int, lambda v: v >= 0, "an integer >= 0")
port = argtype(int, lambda v: 0 <= v <= 65535, "a port in 0..65535")
seconds = argtype(float, lambda v: 0 < v < math.inf, "a number of seconds > 0")
non_negative = argtype(float, lambda v: 0 <= v < math.inf, "a number >= 0")
positive = argtype(float, lambda v: 0 < v < math.inf, "a number > 0")
