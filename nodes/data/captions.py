"""Caption stages: shuffle tags, drop tags, drop the whole caption, replace text."""

from __future__ import annotations

import re

from runtime import Input, Param, node
from runtime.data import PerSampleStage, passthrough
from runtime.port_types import Caption


def split_tags(text: str, delimiter: str) -> list[str]:
    return [t.strip() for t in text.split(delimiter) if t.strip()]


def join_tags(tags: list[str], delimiter: str) -> str:
    sep = delimiter.strip()
    return (sep + " ").join(tags) if sep else delimiter.join(tags)


class _TagStage(PerSampleStage):
    caption = Input(Caption, doc="caption made of tags")
    delimiter = Param(str, ",", doc="text between tags")
    keep_first = Param(int, 0, min=0, max=1000, doc="leading tags that stay in place (e.g. a trigger word)")

    def setup(self, ctx, **values):
        if not self.delimiter:
            raise ValueError("param 'delimiter': must not be empty")


@passthrough("caption")
@node("data.shuffle_tags", title="Shuffle tags", category="Data")
class ShuffleTags(_TagStage):
    """Shuffle a caption's tags, keeping the first N in place; a new order every epoch."""

    def process(self, item, caption):
        tags = split_tags(caption, self.delimiter)
        head, tail = tags[:self.keep_first], tags[self.keep_first:]
        item.rng.shuffle(tail)
        return {"caption": join_tags(head + tail, self.delimiter)}


@passthrough("caption")
@node("data.drop_tags", title="Drop tags", category="Data")
class DropTags(_TagStage):
    """Drop each tag (after the first N) with a probability; a new choice every epoch."""

    probability = Param(float, 0.1, min=0, max=1, doc="chance that a tag is dropped")

    def process(self, item, caption):
        tags = split_tags(caption, self.delimiter)
        rng, p = item.rng, self.probability
        kept = tags[:self.keep_first] + [t for t in tags[self.keep_first:] if rng.random() >= p]
        return {"caption": join_tags(kept, self.delimiter)}


@passthrough("caption")
@node("data.caption_dropout", title="Caption dropout", category="Data")
class CaptionDropout(PerSampleStage):
    """Replace the whole caption with an empty one with a probability, so the model also learns the
    unconditional prediction (what classifier-free guidance samples with); a new choice every epoch.

    Upstream of a cache of the text encoding, the cache keeps one version per epoch only with its
    'variations' param set (e.g. to the number of epochs)."""

    caption = Input(Caption, doc="caption")
    probability = Param(float, 0.05, min=0, max=1, doc="chance that an item trains with an empty caption")

    def process(self, item, caption):
        return {"caption": "" if item.rng.random() < self.probability else caption}


@passthrough("caption")
@node("data.replace_text", title="Replace text", category="Data")
class ReplaceText(PerSampleStage):
    """Replace text in a caption (plain text, or a regular expression with \\1 groups)."""

    caption = Input(Caption, doc="caption")
    find = Param(str, doc="text (or pattern) to find")
    replace = Param(str, "", doc="replacement")
    regex = Param(bool, False, doc="'find' is a regular expression")
    random = False

    def setup(self, ctx, **values):
        if not self.find:
            raise ValueError("param 'find': must not be empty")
        if self.regex:
            try:
                self._pattern = re.compile(self.find)
            except re.error as e:
                raise ValueError(f"param 'find': not a valid regular expression: {e}") from None

    def process(self, item, caption):
        if self.regex:
            return {"caption": self._pattern.sub(self.replace, caption)}
        return {"caption": caption.replace(self.find, self.replace)}
