"""What one item's evaluation sees: its epoch, index and seeded randomness, and how it is skipped.

Randomness is keyed by (run seed, node id, epoch, index) through a stable
integer mix (never Python's salted ``hash``), so worker processes, later runs
and other machines derive the same numbers.
"""

from __future__ import annotations

import hashlib
import random as _random

_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stable_id(text: str) -> int:
    """A 64-bit number for a name (a node id), the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def mix_seed(*parts: int) -> int:
    """Combine integers (seed, node, epoch, index...) into one well-mixed 63-bit seed."""
    x = 0
    for p in parts:
        x = _splitmix(x ^ (p & _MASK))
    return x >> 1


class Item:
    """Passed to ``process(item, ...)``: the item being evaluated.

    ``epoch`` and ``index`` locate it (``index`` is ``None`` for a whole-column
    ``aggregate``). ``seed`` is specific to (run seed, node id, epoch, index);
    ``rng`` is a ``random.Random`` seeded with it, built on first use.
    """

    __slots__ = ("epoch", "index", "seed", "_rng")

    def __init__(self, epoch: int, index: int | None, seed: int):
        self.epoch = epoch
        self.index = index
        self.seed = seed
        self._rng = None

    @property
    def rng(self) -> _random.Random:
        if self._rng is None:
            self._rng = _random.Random(self.seed)
        return self._rng

    def numpy_rng(self):
        """A ``numpy.random.Generator`` seeded like ``rng``."""
        import numpy as np

        return np.random.default_rng(self.seed)

    def torch_generator(self):
        """A CPU ``torch.Generator`` seeded like ``rng`` (for noise drawn with torch)."""
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed)
        return g

    def __repr__(self) -> str:
        return f"Item(epoch={self.epoch}, index={self.index})"


class SkipItem(Exception):
    """Raise from a stage to drop the current item as bad data (unreadable file, missing caption).

    The item leaves its batch, a warning names ``path`` and the epoch summary
    counts it. Any other exception from a stage is a bug and fails the run.
    """

    def __init__(self, reason: str, path: str | None = None):
        super().__init__(reason, path)
        self.reason = reason
        self.path = path
        #: id of the node that raised it (set by the engine)
        self.node: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class DataStageError(RuntimeError):
    """A data stage failed on an item for a reason other than bad data; the message names node and item."""
