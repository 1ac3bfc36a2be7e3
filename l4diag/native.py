"""The optional native scanner: ``_l4diag_native``, built from ``native/_l4diag_native.c`` at install.

It does the per-line work of ``fastmap.Folder`` for plain ASCII blocks in one C pass: line
splitting, the leading ISO timestamp and the line's skeleton id (see the C file). Where it could not
be compiled, or with ``L4DIAG_NO_NATIVE=1`` in the environment, ``module()`` is None and fastmap
uses its numpy/Arrow path; the two give the same Partial (tests/test_native.py).

It is a top-level module, not ``l4diag._native``, so that a source checkout on ``sys.path`` (as
``python -m pytest`` from the repository puts it) still finds the installed build.
"""

from __future__ import annotations

import os

import numpy as np

try:
    import _l4diag_native as _MODULE
except ImportError:  # not built (no compiler at install time): fastmap's numpy path
    _MODULE = None

API_VERSION = 2  # of the C module's functions and flags; bumped with every change to them
REQUIRE_ENV = "L4DIAG_REQUIRE_NATIVE"  # CI sets it so that a failed build cannot pass unnoticed
DISABLE_ENV = "L4DIAG_NO_NATIVE"


def module():
    """The compiled module, or None when it is missing, from other sources (a stale build) or
    disabled by ``L4DIAG_NO_NATIVE``."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    if getattr(_MODULE, "API_VERSION", None) != API_VERSION:  # missing, or built from other sources
        return None
    return _MODULE


class ScannedLines:
    """The lines of a scanned block as a read-only sequence of str, decoded only when asked for."""

    __slots__ = ("raw", "starts")

    def __init__(self, raw: bytes, starts: np.ndarray) -> None:
        self.raw, self.starts = raw, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> str:
        if i < 0:
            i += len(self)
        return self.raw[int(self.starts[i]) : int(self.starts[i + 1]) - 1].decode("ascii")

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class KeyIds:
    """Masked keys as dense ids, and each skeleton id of a ``SkeletonTable`` mapped to its key id.

    Made anew whenever the table is cleared (its ids start again), so it stays as bounded as the table."""

    def __init__(self) -> None:
        self.ids: dict = {}
        self.names: list = []
        self.of_skeleton = np.zeros(0, dtype=np.int64)
        self.candidate = np.zeros(0, dtype=np.int8)  # marker candidate per skeleton: 1, 0, or negative: undecided (fastmap)
        self.skeletons_done = 0

    def add_skeletons(self, keys: list, candidate: np.ndarray) -> None:
        """Key texts and marker candidacy of the table's next skeletons, in id order."""
        ids, names = self.ids, self.names
        new = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            kid = ids.get(key)
            if kid is None:
                kid = ids[key] = len(names)
                names.append(key)
            new[i] = kid
        self.of_skeleton = np.concatenate([self.of_skeleton, new])
        self.candidate = np.concatenate([self.candidate, candidate])
        self.skeletons_done += len(keys)


__all__ = ["KeyIds", "ScannedLines", "module"]
