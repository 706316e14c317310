"""Shared fixtures for the statistics tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261107)


@pytest.fixture
def edges() -> np.ndarray:
    return np.linspace(1.5, 3.4, 191)
