"""Config validation: every error names the field; fuzzed TOML gives only ConfigErrors."""

import string

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widthscan as ws
from widthscan.config import EXAMPLE, ConfigError, diff_configs, dumps_config, loads_config


def test_example_is_valid_and_round_trips():
    cfg = loads_config(EXAMPLE)
    assert cfg.params == ["mup", "sp"] and cfg.seed_list == [0, 1, 2, 3]
    assert loads_config(dumps_config(cfg)) == cfg


@pytest.mark.parametrize("text,field,allowed", [
    ('params = ["mup", "muP"]', "params.1", "'mup', 'sp', 'ntp' or 'mf'"),
    ("[optimizer]\nname = 'rmsprop'", "optimizer.name", "'sgd', 'adam' or 'adamw'"),
    ("[train]\nbatch_size = -4", "train.batch_size", "greater than 0"),
    ("[train]\nstep = 10", "train.step", "allowed keys here: ['batch_size'"),
    ("widths = []", "widths", "at least one width"),
    ("[task]\nname = 'imagenet'", "task.name", "allowed: ["),
    ("[model]\nfamily = 'vgg'", "model.family", "'mlp'"),
    ("[probes.hessian]", "probes.hessian", "allowed"),
    ("[probes.sharpness]\nevery = 30", "probes.sharpness.every",
     "['n_linear', 'n_log', 'options']"),
    ("[probes.sharpness.options]\npreconditioned = 'yes'", "probes.sharpness.options",
     "allowed: true, false, 'auto'"),
    ("[probes.sharpness.options]\nhvp = 'jvp'", "probes.sharpness.options",
     "'closed', 'rev-rev', 'fwd-rev'"),
    ("[probes.sharpness.options]\nwarm = true", "probes.sharpness.options", "'preconditioned'"),
    ("[probes.entk.options]\nweighting = 'adam'", "probes.entk.options", "'auto', 'lr', 'raw'"),
    ("[optimizer]\nname = 'adam'\n[probes.entk.options]\nweighting = 'lr'",
     "probes.entk.options.weighting", "'auto', 'raw'"),
    ("base_width = 4096", "base_width", "wider than every width"),
    ("[optimizer]\nlr = nan", "optimizer.lr", "finite"),
    ("[train]\ndevice = 'tpu'", "train.device", "'cuda:N'"),
])
def test_errors_name_field_and_allowed_values(text, field, allowed):
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    message = str(info.value)
    assert field in message and allowed in message


def test_invalid_toml_names_the_source():
    with pytest.raises(ConfigError, match=r"my\.toml: not valid TOML"):
        loads_config("widths = [64,", "my.toml")


def test_diff_lists_changed_fields():
    a = ws.config.config_dict(loads_config(EXAMPLE))
    b = ws.config.config_dict(loads_config(EXAMPLE.replace("lr = 0.1", "lr = 0.2")))
    assert diff_configs(a, b) == ["optimizer.lr: 0.1 -> 0.2"]


KEYS = ["name", "widths", "base_width", "params", "seeds", "task", "model", "optimizer",
        "schedule", "train", "probes", "executor", "tracker", "lr", "steps", "kind", "options",
        "momentum", "batch_size", "n_log", "loss", "bogus"]
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(string.printable, max_size=8),
    st.sampled_from(["mup", "sp", "sgd", "adam", "cosine", "mlp", "gegenbauer", "cpu", "ce"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_fuzzed_documents_give_validation_errors_only(doc):
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        loads_config(text)
    except ConfigError as err:
        assert "invalid sweep config" in str(err) or "not valid TOML" in str(err)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_validation_errors_only(text):
    try:
        loads_config(text)
    except ConfigError:
        pass
