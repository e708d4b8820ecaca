"""Fixtures for the generic training-node tests (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from tests.torch_fixtures import _one_thread, runner  # noqa: F401  (shared fixtures)
from tests.train.helpers import make_toy


@pytest.fixture
def toy():
    return make_toy()
