"""The sample engine of the data graph (MGDS's model with explicit edges).

Data nodes build lazily evaluated, random-access columns (``Field``); items are
evaluated by (epoch, index) with randomness seeded by (run seed, node id,
epoch, index). Node authors derive from the stage bases in ``runtime.data.stages``;
the training loop consumes a ``BatchSource`` (``runtime.data.batches``).
Nothing here imports torch until items are evaluated.
"""

from .batches import BatchSource, EpochSummary
from .engine import Eval, Field, Skipped, evaluate
from .item import DataStageError, Item, SkipItem
from .stages import (AggregateStage, BatchesStage, CacheStage, DataStage, MergeStage, PerSampleStage, SourceStage,
                     passthrough)

__all__ = [
    "AggregateStage", "BatchSource", "BatchesStage", "CacheStage", "DataStage", "DataStageError", "EpochSummary",
    "Eval", "Field", "Item", "MergeStage", "PerSampleStage", "SkipItem", "Skipped", "SourceStage", "evaluate", "passthrough",
]
