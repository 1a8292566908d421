from pathlib import Path

import pytest


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str, name: str = "sweep.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
