"""Helpers for the evaluation tests: tiny datasets in the official layouts, written with PyAV and Pillow."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=False)
def single_thread():
    """Other test processes share the 2 cores; torch's default thread pool then thrashes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
