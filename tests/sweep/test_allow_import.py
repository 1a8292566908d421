"""Code named in a config runs only with --allow-import; a saved sweep.toml in someone else's
folder never imports anything; load, status and report never do."""

import sys
import warnings

import pytest
from sweep_helpers import small_config

import widthscan as ws
from widthscan.cli.main import main

MODULE = "marker_family_q3"
SOURCE = """
import pathlib
pathlib.Path(__file__).with_name("imported.marker").write_text("ran")
from widthscan.models import mlp


def net(width, d_in, d_out):
    return mlp(width, depth=2, d_in=d_in, d_out=d_out)
"""
USER_MODEL = f"""
[model]
family = "{MODULE}:net"
options = {{ d_in = 6, d_out = 1 }}
"""


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """An importable module (its folder on sys.path) that leaves a marker file when imported."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    marker = code / "imported.marker"
    yield marker
    sys.modules.pop(MODULE, None)


def forget(marker):
    marker.unlink(missing_ok=True)
    sys.modules.pop(MODULE, None)


def test_config_naming_a_module_is_refused_and_check_lists_it(tmp_path, user_code, capsys):
    config = tmp_path / "user.toml"
    config.write_text(small_config(steps=10, every=5) + USER_MODEL)
    out = tmp_path / "out"
    assert main(["run", str(config), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--allow-import {MODULE}" in err and "model.family" in err
    assert main(["config", "--check", str(config)]) == 2
    assert f"would import and run module '{MODULE}'" in capsys.readouterr().err
    assert not user_code.exists() and not out.exists()

    assert main(["config", "--check", str(config), "--allow-import", MODULE]) == 0
    assert f"imports: {MODULE}" in capsys.readouterr().out
    assert user_code.exists()


def test_allowed_module_trains_and_loading_status_report_never_import(
        tmp_path, user_code, capsys):
    config = tmp_path / "user.toml"
    config.write_text(small_config(steps=10, every=5) + USER_MODEL)
    out = tmp_path / "out"
    assert main(["run", str(config), "-o", str(out), "--quiet", "--allow-import", MODULE]) == 0
    assert user_code.exists()
    assert (ws.load_status(out)["state"] == "done").all()
    forget(user_code)

    ds = ws.load(out)
    assert MODULE in ds.attrs["config"]
    assert main(["status", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    assert not user_code.exists()

    # Resuming the same folder without naming the module: refused, nothing imported.
    assert main(["run", str(config), "-o", str(out), "--quiet"]) == 2
    assert not user_code.exists()


def test_someone_elses_saved_config_is_never_imported(tmp_path, user_code, capsys):
    theirs = tmp_path / "theirs"
    ws.Sweep.from_string(small_config(steps=10, every=5) + USER_MODEL,
                         allow_import=[MODULE]).run(theirs, progress=False)
    forget(user_code)
    mine = tmp_path / "mine.toml"
    mine.write_text(small_config(steps=10, every=5))
    assert main(["run", str(mine), "-o", str(theirs), "--quiet"]) == 2
    assert f"{MODULE}:net" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(mine), "-o", str(theirs), "--quiet", "--force-new"]) == 0
    assert not user_code.exists()
    assert list(tmp_path.glob("theirs.old-*"))


def test_python_api_needs_the_same_opt_in(user_code):
    text = small_config(steps=10, every=5) + USER_MODEL
    with pytest.raises(ws.config.ConfigError, match="allow_import"):
        ws.Sweep.from_string(text)
    assert not user_code.exists()
    assert ws.Sweep.from_string(text, allow_import=["marker_family_q3"]).config
    assert user_code.exists()
