"""Argument types shared by the command line and the tools' own ``main`` functions (``python -m ...``)."""
from __future__ import annotations

import argparse


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def non_negative_number(text: str) -> float:
    """A finite number >= 0 (e.g. GPUs per replica: 0.5 shares one GPU between two)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0."""
    value = non_negative_number(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value
