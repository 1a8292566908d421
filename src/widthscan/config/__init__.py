"""Sweep configuration: schema, TOML loading, errors that name the bad field."""

from widthscan.config.example import EXAMPLE
from widthscan.config.load import (
    ConfigError,
    config_dict,
    diff_configs,
    dumps_config,
    load_config,
    loads_config,
    parse_config,
)
from widthscan.config.schema import (
    ExecutorConfig,
    ModelConfig,
    OptimizerConfig,
    ProbeConfig,
    ScheduleConfig,
    SweepConfig,
    TaskConfig,
    TrackerConfig,
    TrainConfig,
)

__all__ = ["EXAMPLE", "ConfigError", "ExecutorConfig", "ModelConfig", "OptimizerConfig",
           "ProbeConfig", "ScheduleConfig", "SweepConfig", "TaskConfig", "TrackerConfig",
           "TrainConfig", "config_dict", "diff_configs", "dumps_config", "load_config",
           "loads_config", "parse_config"]
