"""Test-only data stages: a call counter and a value node whose output may carry a fingerprint."""

from __future__ import annotations

from runtime import Input, Output, Param, node
from runtime.data import PerSampleStage, passthrough
from runtime.port_types import Any, BatchSource as BatchSourceType, Image

#: node id -> number of process() calls in this process
CALLS: dict[str, int] = {}


@passthrough("image")
@node("testdata.count", title="Count calls", category="Test")
class CountCalls(PerSampleStage):
    """Pass the image through, counting calls per node id."""

    image = Input(Image)
    random = False

    def setup(self, ctx, **values):
        self._id = ctx.node_id

    def process(self, item, image):
        CALLS[self._id] = CALLS.get(self._id, 0) + 1
        return {"image": image}


class Model:
    def __init__(self, fingerprint: str):
        if fingerprint:
            self.fingerprint = fingerprint


@node("testdata.model", title="Fake model", category="Test")
class FakeModel:
    """A value with a fingerprint attribute (none when empty)."""

    model = Output(Any)
    fingerprint = Param(str, "")

    def run(self, ctx):
        return {"model": Model(self.fingerprint)}


@passthrough("image")
@node("testdata.use_model", title="Use model", category="Test")
class UseModel(PerSampleStage):
    """Pass the image through; takes a model value input like an encoder would."""

    image = Input(Image)
    model = Input(Any)
    random = False

    def process(self, item, image, model):
        return {"image": image}


@node("testdata.consume", title="Consume batches", category="Test")
class ConsumeBatches:
    """A sink: read every batch of epoch 0 and log how many items came (a stand-in for training)."""

    batches = Input(BatchSourceType)

    def run(self, ctx, batches):
        items = sum(len(b["_index"]) for b in batches.epoch(0))
        ctx.log(f"consumed {items} item(s)", items=items)
        return {}
