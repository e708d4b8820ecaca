"""Fixtures for the generic training-node tests (helpers in helpers.py)."""

from __future__ import annotations

import os

import pytest

from tests.train.helpers import NodeRunner, make_toy

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # 2 shared cores: one torch thread per test process avoids OpenMP oversubscription stalls
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def runner(tmp_path):
    return NodeRunner(tmp_path)


@pytest.fixture
def toy():
    return make_toy()
