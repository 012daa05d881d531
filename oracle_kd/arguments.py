"""Command-line settings checked as they are parsed: a bad value is one line and exit
status 2, before any data is read or a model is loaded."""

from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one `--help` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def count(low: int, high: int | None = None):
    """An argparse type: an integer from `low` (to `high`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {low} or more{f' and at most {high}' if high is not None else ''},"
                                             f" not {value}")
        return value

    return parse


def number(low: float | None = None, above: float | None = None):
    """An argparse type: a finite number, at least `low` or greater than `above`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (above is not None and value <= above):
            bound = f"{low:g} or more" if low is not None else f"more than {above:g}" if above is not None else "finite"
            raise argparse.ArgumentTypeError(f"must be a finite number, {bound}, not {text}")
        return value

    return parse


SEED = count(0, 2**32 - 1)  # what numpy and Lightning's seed_everything accept
