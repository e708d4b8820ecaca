"""The batches node: the end of the data graph."""

from __future__ import annotations

from runtime import node
from runtime.data import BatchesStage


@node("data.batches", title="Batches", category="Data")
class Batches(BatchesStage):
    """Collate per-sample fields into batches for the training loop.

    Each batch maps the name of every connected output port to the items'
    values (tensors stacked), plus '_index' (the item indices) and '_epoch'. Shuffled per epoch with the seed;
    with 'bucket' connected, every batch holds one bucket size. Items that turn
    out unreadable leave their batch with a warning; each epoch ends with a
    summary of what was skipped. 'workers' > 0 loads in DataLoader processes.
    Under torchrun each step holds the samples one process takes at N x batch_size,
    split over the ranks: a disjoint share for each, one bucket per step and the
    same number of batches on every rank.
    """
