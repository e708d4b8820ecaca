"""Fixtures for the Flux family tests."""

from tests.torch_fixtures import _one_thread, runner  # noqa: F401  (shared fixtures)
