"""Reward-model fixtures: a tiny preference set over the circle images of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from reward_helpers import make_preference_set


@pytest.fixture(scope="session")
def pref_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_preference_set(tmp_path_factory.mktemp("prefs"))
