"""Merge: per-concept branches of the data graph joined into one item stream."""

from __future__ import annotations

from runtime import node
from runtime.data import MergeStage


@node("data.merge", title="Merge branches", category="Data")
class Merge(MergeStage):
    """Join per-concept branches (each with its own source and stages) into one stream of items.

    Give each concept (or group of concepts) its own Concepts source and its own
    stages (augmentations, caption processing, aspect bucketing at its own
    resolutions), then connect the first branch's fields to 'fields' and the
    same fields of every other branch to 'more': fields are matched by name
    (the output port's), so each branch hands on e.g. image, caption, bucket,
    loss_weight and role. Items are the first branch's, then the next one's.
    Connect the merged fields to the encoders, caches and the batches node.
    """
