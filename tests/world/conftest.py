"""Fixtures for the shapes-world tests: one small generated world per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrlhf.world import World, generate


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """120 scenes (about 0.3 s), enough for every family to appear on both splits."""
    return generate(tmp_path_factory.mktemp("world") / "w", n=120, seed=7)


@pytest.fixture(scope="session")
def world_dir(small_world: World) -> Path:
    return small_world.root
