"""Fixtures for widthscan.tasks tests: tiny data sets written in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_cifar_dir, make_idx_dir


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test writes fitted state into its own cache directory, never ~/.cache."""
    monkeypatch.setenv("WIDTHSCAN_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def idx_dir(tmp_path: Path) -> tuple[Path, dict]:
    """200 train / 40 test random images, gzipped and plain files mixed."""
    root = tmp_path / "fmnist"
    return root, make_idx_dir(root, 200, 40, seed=0, gz=None)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> tuple[Path, dict]:
    """20 train images (4 per data batch) and 10 test images."""
    root = tmp_path / "cifar"
    return root, make_cifar_dir(root)
