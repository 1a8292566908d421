"""``widthscan check`` (exit codes, page) and ``widthscan.testing.assert_width_consistent``."""

import re

import check_models as cm
import pandas as pd
import pytest

from widthscan.cli.main import main
from widthscan.testing import assert_width_consistent

SMALL = ["--base-width", "64", "--widths", "64", "128", "256", "--seeds", "2",
         "--dynamics-steps", "3"]


def test_cli_consistent_model_exits_0_and_writes_the_page(tmp_path, capsys):
    code = main(["check", "check_models:sequential_mlp", *SMALL, "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verdict: width-consistent" in out
    assert re.search(r"^\s+2\.weight\s+256x256\s+hidden", out, re.M)  # roles at the widest
    page = (tmp_path / "check.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # coordinate check + dynamics
    assert "slope" in page and "4.weight" in page


def test_cli_planted_mistake_exits_1_naming_the_layer(capsys):
    code = main(["check", "check_models:mlp_fixed_hidden", *SMALL])
    out = capsys.readouterr().out
    assert code == 1
    assert "NOT width-consistent; likely cause: this layer ignores the width: 2 has 64" in out


@pytest.mark.parametrize("args,words", [
    (["check_models:sequential_mlp", "--base-width", "64", "--param", "xp"], "param='xp'"),
    (["no_such_module_xyz:f", "--base-width", "64"], "cannot import"),
    (["check_models:sequential_mlp", "--base-width", "64", "--widths", "64", "128"],
     "at least 3"),
    (["check_models:sequential_mlp", "--base-width", "64", "--input-shape", "3"],
     "does not run"),
    (["check_models:sequential_mlp", "--base-width", "64", "--task", "text"],
     "does not run on the text data"),
])
def test_cli_usage_errors_exit_2(args, words, capsys):
    assert main(["check", *args]) == 2
    assert words in capsys.readouterr().err


def test_cli_task_and_input_shape_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check", "mlp", "--base-width", "64", "--task", "text", "--input-shape", "3"])
    assert exit_.value.code == 2


def test_assert_width_consistent_returns_the_table_or_raises_with_it():
    table = assert_width_consistent(cm.sequential_mlp, 64, widths=[64, 128, 256],
                                    dynamics_steps=0)
    assert isinstance(table, pd.DataFrame)
    assert list(table["layer"]) == ["0", "2", "4"]
    assert (table["verdict"] == "width-independent").all()
    with pytest.raises(AssertionError) as err:
        assert_width_consistent(cm.lm_sqrt_attention, 64, widths=[64, 128, 256],
                                dynamics_steps=0)
    text = str(err.value)
    assert "attn:logits" in text and "qk_scale 1/d_head" in text
    assert "init slope" in text  # the per-layer table is in the message
