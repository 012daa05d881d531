"""Command-line settings checked as they are parsed: a bad value is one line and exit
status 2, before any data is read or a model is loaded."""

from __future__ import annotations

import argparse
import math


def shows_no_default(default) -> bool:
    """A default not worth printing: none, an off flag, an empty list."""
    return default is None or default is False or default is argparse.SUPPRESS or default == []


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with each option's default where its help text does not say it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or text == argparse.SUPPRESS or shows_no_default(action.default):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one `--help` away) and defaults in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

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
