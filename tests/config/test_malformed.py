"""Malformed sweep configs: each is one line naming the field path, exit code 2, and
nothing is written (the output folder is never created)."""

import tempfile
from pathlib import Path

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widthscan.cli.main import main

BASE = """\
widths = [16, 32]
base_width = 16
seeds = 2
[task]
name = "gegenbauer"
probe_examples = 16
options = { dim = 6, degree = 2 }
[train]
steps = 10
batch_size = 16
"""
TEXT = """\
widths = [32, 64]
base_width = 32
seeds = 1
[task]
name = "text"
probe_examples = 8
options = { seq_len = 8 }
[model]
family = "transformer"
[train]
steps = 10
batch_size = 4
"""


def with_(base: str, top: str = "", **tables: str) -> str:
    """``base`` with ``top`` lines before the first table and ``tables`` appended."""
    head, _, rest = base.partition("[task]")
    text = head + top + ("\n" if top else "") + "[task]" + rest
    for name, body in tables.items():
        text += f"[{name}]\n{body}\n"
    return text


CORPUS = [
    (with_(BASE).replace("widths = [16, 32]", "widths = [true, 32]"), "widths.0", "boolean"),
    (with_(BASE).replace("seeds = 2", "seeds = true"), "seeds", "a count 1..1024"),
    (with_(BASE).replace("seeds = 2", "seeds = 1000000000"), "seeds", "a count 1..1024"),
    (with_(BASE).replace("seeds = 2", "seeds = [0, 1, 0]"), "seeds", "distinct"),
    (with_(BASE).replace("widths = [16, 32]", f"widths = {list(range(16, 16 + 100))}"),
     "widths", "at most 64"),
    (with_(BASE).replace("widths = [16, 32]", "widths = [16, 1099511627776]"), "widths.1",
     "less than or equal to 1048576"),
    (with_(BASE).replace("steps = 10", "steps = 1000000000000"), "train.steps",
     "less than or equal to 1000000000"),
    (with_(BASE).replace("batch_size = 16", "batch_size = 16.0"), "train.batch_size",
     "integer"),
    (with_(BASE, optimizer="lr = true"), "optimizer.lr", "boolean"),
    (with_(BASE, optimizer='lr = "0.1"'), "optimizer.lr", "not a string"),
    (with_(BASE, model="options = { depth = 100000000 }"), "model.options.depth", "1..1024"),
    (with_(BASE, model="options = { depth = true }"), "model.options.depth", "boolean"),
    (with_(BASE, model='options = { activation = "swish" }'), "model.options",
     "allowed: ['gelu'"),
    (with_(BASE, model='family = "os:system"'), "model.family", "--allow-import os"),
    (with_(BASE).replace("dim = 6", "dim = -3"), "task.options", "dim"),
    (with_(BASE).replace("dim = 6, degree = 2", 'mode = "offline"'), "task.options",
     "n_train"),
    (TEXT.replace('family = "transformer"', 'family = "transformer"\noptions = { n_heads = 3 }'),
     "model.options", "divisible by n_heads=3"),
    (with_(BASE, **{"probes.sharpness.options": "k = 0"}), "probes.sharpness.options", "k"),
    (with_(BASE).replace("widths = [16, 32]", "widths = [16, 1048576]"), "widths",
     "needs at least"),
    (BASE.replace("[task]", "bogus = 1\n[task]"), "bogus", "unknown key"),
    (with_(BASE).replace("[task]", "[task\n"), "not valid TOML", ""),
    ("x = " + "[" * 3000 + "]" * 3000, "nested", ""),
    (with_(BASE).replace("dim = 6", "dim = " + "[" * 40 + "1" + "]" * 40), "task.options.dim",
     "at most 16 levels"),
]
if not torch.cuda.is_available():
    CORPUS.append((with_(BASE).replace("batch_size = 16", 'batch_size = 16\ndevice = "cuda"'),
                   "train.device", "no CUDA device"))


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def assert_one_clean_line(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("text,field,allowed", CORPUS, ids=[c[1] for c in CORPUS])
def test_malformed_config_exits_2_names_the_field_and_writes_nothing(
        tmp_path, capsys, text, field, allowed):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "run", str(config), "-o", str(out), "--quiet")
    assert code == 2
    assert_one_clean_line(err, field, allowed)
    assert not out.exists()
    code, err = run_cli(capsys, "config", "--check", str(config))
    assert code == 2
    assert_one_clean_line(err, field, allowed)


def test_invalid_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_bytes(BASE.encode() + b"# caf\xe9\n")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "run", str(config), "-o", str(out))
    assert code == 2
    assert_one_clean_line(err, "bad.toml", "not UTF-8", "offset")
    assert not out.exists()


def test_missing_user_module_is_one_line_even_when_allowed(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(with_(BASE, model='family = "no_such_module_q7:net"'))
    out = tmp_path / "out"
    code, err = run_cli(capsys, "run", str(config), "-o", str(out), "--allow-import",
                        "no_such_module_q7")
    assert code == 2
    assert_one_clean_line(err, "model.family", "no_such_module_q7", "ModuleNotFoundError")
    assert not out.exists()


def test_a_valid_config_passes_the_same_checks(tmp_path, capsys):
    config = tmp_path / "ok.toml"
    config.write_text(BASE)
    code = main(["config", "--check", str(config)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "imports: nothing" in printed and "width 32: 1,313 parameters" in printed


def test_widths_true_is_not_width_one():
    """The issue's silent misread: pydantic took ``true`` as the integer 1."""
    from widthscan.config import ConfigError, loads_config

    with pytest.raises(ConfigError, match=r"widths\.0: a boolean is not an integer"):
        loads_config("widths = [true, 32]\nbase_width = 32")


# Mutations of a valid config: (field path, table keys, strategy of invalid values).
INTS = st.one_of(st.booleans(), st.integers(max_value=0), st.text(max_size=3),
                 st.floats(allow_nan=False).filter(lambda f: f != int(f) if abs(f) < 1e15
                                                    else True))
MUTATIONS = [
    ("seeds", ("seeds",), st.one_of(st.booleans(), st.integers(min_value=1025),
                                    st.integers(max_value=0), st.text(max_size=3))),
    ("widths", ("widths",), st.lists(st.one_of(st.booleans(), st.integers(max_value=0),
                                               st.integers(min_value=2**20 + 1)),
                                     min_size=1, max_size=3).map(lambda v: [16, *v])),
    ("base_width", ("base_width",), INTS),
    ("train.steps", ("train", "steps"), st.one_of(INTS, st.integers(min_value=10**9 + 1,
                                                                   max_value=2**62))),
    ("train.batch_size", ("train", "batch_size"), INTS),
    ("train.checkpoint_every", ("train", "checkpoint_every"), INTS),
    ("task.probe_examples", ("task", "probe_examples"), INTS),
    ("optimizer.lr", ("optimizer", "lr"), st.one_of(st.booleans(), st.floats(max_value=0),
                                                    st.text(max_size=3))),
    ("optimizer.momentum", ("optimizer", "momentum"), st.one_of(
        st.booleans(), st.floats(min_value=1), st.floats(max_value=-1e-9))),
    ("model.options.depth", ("model", "options", "depth"), st.one_of(
        st.booleans(), st.integers(min_value=1025, max_value=2**62))),
    ("executor.workers", ("executor", "workers"), st.one_of(INTS, st.integers(min_value=1025))),
]
BASE_DICT = {"widths": [16, 32], "base_width": 16, "seeds": 2,
             "task": {"name": "gegenbauer", "probe_examples": 16,
                      "options": {"dim": 6, "degree": 2}},
             "model": {"options": {"depth": 2}}, "train": {"steps": 10, "batch_size": 16}}


@st.composite
def mutated(draw):
    field, keys, values = draw(st.sampled_from(MUTATIONS))
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_DICT.items()}
    table = doc
    for key in keys[:-1]:
        table[key] = dict(table.get(key, {}))
        table = table[key]
    table[keys[-1]] = draw(values)
    return field, doc


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_configs_exit_2_with_the_field_path_and_write_nothing(capsys, case):
    field, doc = case
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "m.toml", Path(tmp) / "out"
        config.write_text(tomli_w.dumps(doc))
        code = main(["run", str(config), "-o", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert field in err and "Traceback" not in err, err
        assert not out.exists()
