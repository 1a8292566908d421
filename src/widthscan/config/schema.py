"""The sweep schema: every field validated before anything runs; unknown keys are errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PositiveInt = Annotated[int, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(Strict):
    name: str = "gegenbauer"
    seed: Annotated[int, Field(ge=0)] = 0
    probe_examples: PositiveInt = 256
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Strict):
    family: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9, 0.999)
    eps: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-8

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov = true needs momentum > 0")
        return self


class ScheduleConfig(Strict):
    kind: Literal["constant", "cosine"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    final_factor: Annotated[float, Field(ge=0, le=1)] = 0.0


class TrainConfig(Strict):
    steps: PositiveInt = 1000
    batch_size: PositiveInt = 128
    loss: Literal["auto", "mse", "ce"] = "auto"
    precision: Literal["float32", "float64", "bfloat16"] = "float32"
    device: str = "cpu"
    checkpoint_every: PositiveInt = 500
    log_every: PositiveInt = 1
    init_gain: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    zero_init: list[Literal["readout", "query"]] = Field(default_factory=list)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "mps" or v.startswith("cuda")):
            raise ValueError("device must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
        return v


class ProbeConfig(Strict):
    """When and how one probe runs: log-spaced steps plus a linear grid (unset: the probe's
    own default, dense for cheap probes, sparse for sharpness and eNTK), plus options."""

    n_log: Annotated[int, Field(ge=0)] | None = None
    n_linear: Annotated[int, Field(ge=0)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def suite_options(self) -> dict[str, Any]:
        """Schedule and options as one ``ProbeSuite`` entry (unset schedule keys omitted)."""
        pairs = (("n_log", self.n_log), ("n_linear", self.n_linear))
        return {**{k: v for k, v in pairs if v is not None}, **self.options}


class ExecutorConfig(Strict):
    kind: Literal["local", "dask", "submitit"] = "local"
    workers: PositiveInt = 2
    scheduler: str | None = None
    retries: Annotated[int, Field(ge=0)] = 2
    partition: str | None = None
    time_min: PositiveInt = 60
    gpus_per_task: Annotated[int, Field(ge=0)] = 0
    array_parallelism: PositiveInt = 16
    folder: str | None = None
    cluster: Literal["slurm", "local", "debug", "auto"] = "slurm"


class TrackerConfig(Strict):
    kind: Literal["none", "tensorboard", "wandb"] = "none"
    project: str = "widthscan"


class StoreConfig(Strict):
    """What a run keeps on disk once it has finished (docs/data-model.md): its checkpoint
    "none" (default; a finished run is never resumed), "last" (to train it further), or
    "all" (also a copy of every checkpoint under checkpoints/)."""

    keep_checkpoints: Literal["none", "last", "all"] = "none"


class SweepConfig(Strict):
    """One sweep: a grid of parameterizations x widths, each run training ``seeds`` at once."""

    name: str = "sweep"
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    widths: list[PositiveInt] = Field(default_factory=lambda: [64, 128, 256, 512, 1024])
    base_width: PositiveInt = 64
    params: list[Literal["mup", "sp", "ntp", "mf"]] = Field(default_factory=lambda: ["mup"])
    seeds: PositiveInt | list[Annotated[int, Field(ge=0)]] = 4
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    probes: dict[str, ProbeConfig] = Field(default_factory=dict)
    executor: ExecutorConfig = ExecutorConfig()
    tracker: TrackerConfig = TrackerConfig()
    store: StoreConfig = StoreConfig()

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("widths must list at least one width")
        if len(set(v)) != len(v):
            raise ValueError(f"widths {v} repeat a width")
        return sorted(v)

    @field_validator("params")
    @classmethod
    def _params(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("params must list each parameterization once, at least one")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("seeds must be a count or a list of distinct init seeds")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)
