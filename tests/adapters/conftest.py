"""Fixtures of the adapter tests: the shared torch fixtures, and helpers that set up, randomise and merge."""

from __future__ import annotations

from tests.torch_fixtures import _one_thread, runner  # noqa: F401  (shared fixtures)
