"""Every experiment end to end at the ``smoke`` scale (the ``cpu`` configs shrunk to two
widths and six steps): sweeps run, every claim gets a verdict row, pages are written. The
verdicts themselves are not meaningful at this size; the CPU-scale ones are in
docs/reproduce.md and their logic is tested on planted data in test_reproduce_verdicts.py."""

from __future__ import annotations

import json

import pytest

from widthscan.analysis.claims import VERDICTS, stats
from widthscan.sweep.reproduce import EXPERIMENTS, run_all, run_experiment


@pytest.fixture(autouse=True)
def few_bootstrap_draws(monkeypatch):
    monkeypatch.setattr(stats, "N_BOOT", 4)


def test_every_experiment_runs_and_judges_every_claim(tmp_path):
    runs = run_all("smoke", tmp_path, progress=False, log=lambda *a: None, reports=False)
    assert [r.experiment.name for r in runs] == list(EXPERIMENTS)
    index = (tmp_path / "index.html").read_text()
    for run in runs:
        assert not run.failed, run.failed
        saved = json.loads((tmp_path / run.experiment.name / "verdicts.json").read_text())
        claims = [c.text for c in run.experiment.claims]
        assert [row["claim"] for row in saved["claims"]] == claims
        assert all(row["verdict"] in VERDICTS for row in saved["claims"])
        for part in run.experiment.configs("smoke"):
            assert (tmp_path / run.experiment.name / f"{part}.toml").is_file()
        assert f'id="{run.experiment.name}"' in index
    assert index.count("data-verdict=") == sum(len(e.claims) for e in EXPERIMENTS.values())


def test_part_report_starts_with_paper_vs_measured(tmp_path):
    run = run_experiment("power-law", "smoke", tmp_path, progress=False, log=lambda *a: None)
    html = (tmp_path / "main" / "report.html").read_text()
    assert html.index('id="paper"') < html.index('id="verdict"')
    assert html.count("data-claim=") == len(run.results) == 2
    page = (tmp_path / "report.html").read_text()
    assert 'href="main/report.html"' in page


def test_cli_writes_tomls_that_widthscan_run_resumes(tmp_path, capsys):
    from widthscan.cli.main import main
    from widthscan.store import iter_run_dirs

    out = tmp_path / "pl"
    assert main(["reproduce", "power-law", "--scale", "smoke", "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "statistic  threshold" in printed and "report:" in printed

    def stamps() -> dict:
        return {(p, w): (path / "status.json").stat().st_mtime_ns
                for p, w, path in iter_run_dirs(out / "main")}

    before = stamps()
    assert len(before) == 2
    assert main(["run", str(out / "main.toml"), "-o", str(out / "main"), "--quiet"]) == 0
    assert stamps() == before  # the same config: finished runs are kept, not retrained
