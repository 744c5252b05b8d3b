"""Sources and folds of annotated faces: which data set a file comes from, and halves
of a folder that keep the sources' shares (fit a calibration on one, score another)."""

from __future__ import annotations

import argparse


def source_of(name: str) -> str:
    """The data set a 300-W file comes from: its name's prefix (``helen``, ``lfpw``...)."""
    return name.split("_")[0]


def parse_fold(text: str) -> tuple[int, int]:
    """``"K/N"`` (fold K of N, 0-based) for ``--fold`` options; argparse reports errors."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/2") from None
    if n < 2 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need N >= 2 and 0 <= K < N")
    return k, n


def in_fold(names: list[str], fold: tuple[int, int] | None) -> list[bool]:
    """Which ``names`` belong to ``fold`` (K, N): within each source, in sorted order,
    every N-th name from the K-th, so that each fold keeps the sources' shares (a
    calibration fitted on one fold and measured on another). None: all of them."""
    if fold is None:
        return [True] * len(names)
    k, n = fold
    rank: dict[str, int] = {}
    seen: dict[str, int] = {}
    for name in sorted(names):
        source = source_of(name)
        rank[name] = seen.get(source, 0)
        seen[source] = rank[name] + 1
    return [rank[name] % n == k for name in names]
