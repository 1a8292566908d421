"""The sweep schema: every field validated before anything runs; unknown keys are errors."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

MAX_WIDTH = 2**20
MAX_WIDTHS = 64
MAX_SEEDS = 1024
MAX_SEED = 2**63 - 1
MAX_STEPS = 10**9
MAX_BATCH = 2**20
MAX_PROBE_POINTS = 10**4
MAX_WORKERS = 1024


def _integer(value: Any) -> Any:
    """Integers (and numpy integers) only: booleans, strings and floats are refused."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, str | float):
        raise ValueError(f"must be an integer, not a {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        return value


def _number(value: Any) -> Any:
    """Real numbers only: booleans and strings are refused."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str):
        raise ValueError("must be a number, not a string")
    return value


def _seeds(value: Any) -> int | list[int]:
    """A count in [1, MAX_SEEDS] or a list of at most MAX_SEEDS distinct seeds in [0, MAX_SEED]."""
    allowed = (f"allowed: a count 1..{MAX_SEEDS} or a list of at most {MAX_SEEDS} distinct "
               f"integers in 0..2**63-1")
    try:
        return _seed_values(value, allowed)
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message == allowed else f"{message}; {allowed}") from None


def _seed_values(value: Any, allowed: str) -> int | list[int]:
    if isinstance(value, list | tuple):
        seeds = [_integer(v) for v in value]
        if not seeds or len(seeds) > MAX_SEEDS or any(
                not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seeds) or len(
                set(seeds)) != len(seeds):
            raise ValueError(allowed)
        return seeds
    count = _integer(value)
    if not isinstance(count, int) or not 1 <= count <= MAX_SEEDS:
        raise ValueError(allowed)
    return count


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
PositiveInt = Annotated[Int, Field(gt=0)]
Count = Annotated[Int, Field(gt=0, le=MAX_STEPS)]
Width = Annotated[Int, Field(gt=0, le=MAX_WIDTH)]
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(Strict):
    name: str = "gegenbauer"
    seed: Seed = 0
    probe_examples: Annotated[Int, Field(gt=0, le=MAX_BATCH)] = 256
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Strict):
    family: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[Float, Field(gt=0)] = 0.1
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (
        0.9, 0.999)
    eps: Annotated[Float, Field(gt=0)] = 1e-8

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov = true needs momentum > 0")
        return self


class ScheduleConfig(Strict):
    kind: Literal["constant", "cosine"] = "constant"
    warmup_steps: Annotated[Int, Field(ge=0, le=MAX_STEPS)] = 0
    final_factor: Annotated[Float, Field(ge=0, le=1)] = 0.0


class TrainConfig(Strict):
    steps: Count = 1000
    batch_size: Annotated[Int, Field(gt=0, le=MAX_BATCH)] = 128
    loss: Literal["auto", "mse", "ce"] = "auto"
    precision: Literal["float32", "float64", "bfloat16"] = "float32"
    device: str = "cpu"
    checkpoint_every: Count = 500
    log_every: Count = 1
    init_gain: Annotated[Float, Field(gt=0)] = 1.0
    check_memory: bool = True
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

    n_log: Annotated[Int, Field(ge=0, le=MAX_PROBE_POINTS)] | None = None
    n_linear: Annotated[Int, Field(ge=0, le=MAX_PROBE_POINTS)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def suite_options(self) -> dict[str, Any]:
        """Schedule and options as one ``ProbeSuite`` entry (unset schedule keys omitted)."""
        pairs = (("n_log", self.n_log), ("n_linear", self.n_linear))
        return {**{k: v for k, v in pairs if v is not None}, **self.options}


class ExecutorConfig(Strict):
    kind: Literal["local", "dask", "submitit"] = "local"
    workers: Annotated[Int, Field(gt=0, le=MAX_WORKERS)] = 2
    scheduler: str | None = None
    retries: Annotated[Int, Field(ge=0, le=100)] = 2
    partition: str | None = None
    time_min: Count = 60
    gpus_per_task: Annotated[Int, Field(ge=0, le=64)] = 0
    array_parallelism: Annotated[Int, Field(gt=0, le=MAX_WORKERS)] = 16
    folder: str | None = None
    cluster: Literal["slurm", "local", "debug", "auto"] = "slurm"


class TrackerConfig(Strict):
    kind: Literal["none", "tensorboard", "wandb"] = "none"
    project: str = "widthscan"


class StoreConfig(Strict):
    """What a run keeps on disk once it has finished (docs/data-model.md): its checkpoint
    "none" (default; a finished run is never resumed), "last" (to train it further), or
    "all" (also a copy of every checkpoint under checkpoints/); and its scalars once, as the
    checksummed scalars.parquet (default), or also as the crash-safe scalars.jsonl it was
    logged to (``keep_scalar_log = true``: a damaged parquet then falls back to the log).
    Training a finished run further rewrites the log from the parquet first."""

    keep_checkpoints: Literal["none", "last", "all"] = "none"
    keep_scalar_log: bool = False


class SweepConfig(Strict):
    """One sweep: a grid of parameterizations x widths, each run training ``seeds`` at once."""

    name: str = "sweep"
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    widths: Annotated[list[Width], Field(max_length=MAX_WIDTHS)] = Field(
        default_factory=lambda: [64, 128, 256, 512, 1024])
    base_width: Width = 64
    params: list[Literal["mup", "sp", "ntp", "mf"]] = Field(default_factory=lambda: ["mup"])
    seeds: Annotated[int | list[int], BeforeValidator(_seeds)] = 4
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

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)
