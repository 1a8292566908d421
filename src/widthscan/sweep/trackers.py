"""Optional experiment trackers behind one small interface: log(step, scalars), close()."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class NullTracker:
    def log(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars as TensorBoard event files under ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """Weights & Biases in offline mode (sync later with ``wandb sync``)."""

    def __init__(self, project: str, name: str, log_dir: str | Path, config: dict):
        import wandb

        self.run = wandb.init(project=project, name=name, dir=str(log_dir), config=config,
                              mode="offline", reinit=True)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(kind: str, run_dir: Path, name: str, project: str, config: dict) -> Tracker:
    if kind == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard")
    if kind == "wandb":
        return WandbTracker(project, name, run_dir, config)
    return NullTracker()
