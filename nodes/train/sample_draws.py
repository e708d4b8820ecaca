"""Where an objective's random draws come from: the loop's generator for the whole batch (``per_batch``),
or one small generator per sample (``per_sample``), seeded by the objective's seed and node id, the
batch's epoch and the sample's item index.

With ``per_sample`` a sample's noise, timestep, offset and mask draws do not depend on the batch it
is in, so a run gives the same result on any number of ranks (torchrun) and with any split into
micro-batches: 2 ranks x batch 2 train as 1 process x batch 4. No torch import at module level.
"""

from __future__ import annotations

from runtime import Choice, Param, Seed

DRAWS = ("per_batch", "per_sample")
EPOCH, INDEX = "_epoch", "_index"


class SampleDraws:
    """One CPU generator per sample of a batch; passed where a ``torch.Generator`` goes, and ``draw``
    makes each draw once per sample (size 1) and concatenates them."""

    def __init__(self, seeds: list[int]):
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def each(self, fn):
        """``fn(generator)`` for every sample's generator, concatenated along the first dim."""
        import torch

        return torch.cat([fn(g) for g in self.generators])


def draw(generator, n: int, fn):
    """``fn(n, generator)``: a draw whose first dim is the batch's ``n`` samples. With ``SampleDraws``,
    ``fn(1, g)`` per sample, concatenated, so sample i's values come from its own generator."""
    if isinstance(generator, SampleDraws):
        if len(generator) != n:
            raise ValueError(f"{n} samples to draw for, but {len(generator)} per-sample generators")
        return generator.each(lambda g: fn(1, g))
    return fn(n, generator)


def item_seeds(batch: dict, base_seed: int, n: int, node: str) -> list[int]:
    """Per-sample seeds from ``base_seed`` (the objective's seed mixed with its node id), the batch's
    ``_epoch`` and each item's ``_index``; a batch without them is one clear error."""
    from runtime.data.item import mix_seed

    epoch, index = batch.get(EPOCH), batch.get(INDEX)
    missing = [k for k, v in ((EPOCH, epoch), (INDEX, index)) if v is None]
    if missing:
        raise ValueError(f"{node}: draws per_sample needs the batch fields {' and '.join(map(repr, missing))} "
                         f"(data.batches adds them); these batches lack them, so set draws to per_batch")
    index = [int(i) for i in index]
    if len(index) != n:
        raise ValueError(f"{node}: draws per_sample: the batch field '_index' has {len(index)} entries for "
                         f"{n} samples")
    return [mix_seed(base_seed, int(epoch), i) for i in index]


class DrawParams:
    """The ``draws`` and ``seed`` params of both objective nodes (mixed into their classes)."""

    draws = Param(Choice(*DRAWS), "per_batch",
                  doc="random draws (noise, timesteps, offsets, unmasked items): per_batch from train.loop's "
                      "generator; per_sample from each item's own (seed, epoch, index): results that do not "
                      "depend on the number of GPUs or the micro-batch split (costs a little per sample)")
    seed = Param(Seed, 42,
                 doc="draws per_sample: the seed of every sample's draws (mixed with this node's id, the "
                     "epoch and the item; the presets give it the graph's seed); per_batch uses train.loop's seed")

    def draw_settings(self, ctx) -> dict:
        """The objective's ``draws`` and ``draw_seed`` (the seed mixed with this node's id)."""
        return {"draws": self.draws, "draw_seed": ctx.seed_for(self.seed)}
