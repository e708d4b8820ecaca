"""Fixtures for the data-graph tests (helpers live in datagraph_helpers, test-only nodes in datagraph_nodes)."""

from __future__ import annotations

import pytest

from datagraph_helpers import Dataset, make_dataset


@pytest.fixture
def dataset(tmp_path) -> Dataset:
    return make_dataset(tmp_path / "images")


@pytest.fixture
def clean_dataset(tmp_path) -> Dataset:
    return make_dataset(tmp_path / "clean", bad=False)


@pytest.fixture(scope="session")
def data_registry():
    """Built-in nodes plus the test-only stages in this folder's helpers."""
    import datagraph_nodes
    from runtime.registry import Registry

    reg = Registry.discover(builtin=True, entry_points=False)
    reg.register_module(datagraph_nodes, "tests")
    assert not reg.load_errors, reg.load_errors
    return reg
