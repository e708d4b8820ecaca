"""Fixtures shared by the test folders that run torch (tests/sd, tests/train); their conftests import them."""

from __future__ import annotations

import os

import pytest

from tests.train.helpers import NodeRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # 2 shared cores: one torch thread per test process avoids OpenMP oversubscription stalls
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def runner(tmp_path):
    """Runs single nodes in a workspace under tmp_path and records their events."""
    return NodeRunner(tmp_path)
