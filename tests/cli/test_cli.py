"""The command line: one clear line and a non-zero exit for bad input, one line on
Ctrl-C, --version, and the demo's closing directions."""

import importlib

import pytest

import widthscan
from widthscan.cli import main as cli
from widthscan.sweep import Sweep


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"widthscan {widthscan.__version__}"


@pytest.mark.parametrize("command", ["report", "status"])
def test_missing_and_empty_folders_are_one_line_errors(tmp_path, capsys, command):
    assert cli.main([command, str(tmp_path / "nope")]) == 2
    assert "no such directory" in one_error_line(capsys)
    assert cli.main([command, str(tmp_path)]) == 2
    assert "not a sweep directory" in one_error_line(capsys)
    assert not (tmp_path / "report.html").exists()


def test_report_of_a_sweep_that_logged_nothing_is_an_error(tmp_path, capsys, tiny_sweep):
    (tmp_path / "sweep.toml").write_text(tiny_sweep)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in one_error_line(capsys)
    assert not (tmp_path / "report.html").exists()


def test_report_into_a_file_path_is_an_error(tmp_path, capsys, tiny_sweep):
    (tmp_path / "sweep.toml").write_text(tiny_sweep)
    (tmp_path / "afile").write_text("")
    assert cli.main(["report", str(tmp_path), "-o", str(tmp_path / "afile" / "out")]) == 2
    line = one_error_line(capsys)
    assert "afile is a file, not a folder" in line


def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch, tiny_sweep):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sweep, "run", interrupted)
    config = tmp_path / "sweep.toml"
    config.write_text(tiny_sweep)
    assert cli.main(["run", str(config), "-o", str(tmp_path / "out")]) == 130
    assert "run the same command again to resume" in one_error_line(capsys)


def fake_report(calls: list):
    """Stands in for widthscan.report.report (tested in tests/report): records its call
    and writes the HTML file."""

    def report(data, path):
        calls.append((str(data), str(path)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html></html>")
        return path

    return report


def test_demo_reports_progress_and_says_what_to_open(tmp_path, capsys, monkeypatch, tiny_sweep):
    calls: list = []
    monkeypatch.setattr(importlib.import_module("widthscan.report"), "report", fake_report(calls))
    monkeypatch.setattr("widthscan.sweep.demo.DEMO_TOML", tiny_sweep)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert sum("(done)" in ln for ln in captured.err.splitlines()) == 6
    tail = captured.out.strip().splitlines()
    assert f"report: {out / 'report.html'}" in tail
    at = tail.index(f"Open {out / 'report.html'} in a browser.")
    assert tail[at + 1].startswith("Look first at the Verdict")
    assert calls == [(str(out), str(out / "report.html"))]
    html = tmp_path / "elsewhere" / "r.html"
    assert cli.main(["report", str(out), "-o", str(html)]) == 0
    assert cli.main(["report", str(out), "-o", str(tmp_path) + "/"]) == 0
    assert calls[1:] == [(str(out), str(html)), (str(out), str(tmp_path / "report.html"))]
