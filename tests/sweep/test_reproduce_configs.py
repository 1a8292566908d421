"""The experiments' sweep configs, the TOMLs ``reproduce`` writes, the CLI and the report
section "Paper vs measured"."""

from __future__ import annotations

import pytest

from claims_data import logits
from widthscan.analysis.claims import parse_sweep_name, stats
from widthscan.cli.main import main
from widthscan.config import ConfigError, load_config, parse_config
from widthscan.report import SECTIONS, paper, report
from widthscan.report.context import Context
from widthscan.sweep.reproduce import EXPERIMENTS, SCALES, list_table, write_configs


@pytest.mark.parametrize("scale", SCALES)
def test_every_experiment_has_valid_configs_and_claims_about_its_parts(scale):
    for exp in EXPERIMENTS.values():
        configs = exp.configs(scale)
        assert configs, exp.name
        for part, cfg in configs.items():
            parsed = parse_config(cfg)
            assert parse_sweep_name(parsed.name) == (exp.name, part, scale)
            assert len(parsed.widths) >= (2 if scale == "smoke" else 4), (exp.name, part)
            assert parsed.train.device == ("auto" if scale in ("gpu", "paper") else "cpu")
        assert {c.part for c in exp.claims} <= set(configs), exp.name


def test_paper_scale_follows_appendix_a():
    cfg = EXPERIMENTS["loss-curves"].configs("paper")["resnet"]
    assert cfg["task"]["name"] == "cifar5m" and cfg["task"]["options"]["augment"] is True
    assert cfg["model"]["family"] == "resnet18"
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    assert cfg["schedule"]["kind"] == "cosine"
    assert (cfg["train"]["steps"], cfg["train"]["batch_size"]) == (20000, 250)
    large_lr = EXPERIMENTS["sharpness"].configs("paper")["resnet"]
    assert (large_lr["optimizer"]["lr"], large_lr["train"]["batch_size"]) == (0.3, 32)
    text = EXPERIMENTS["loss-curves"].configs("paper")["transformer"]
    assert text["optimizer"]["name"] == "adam"
    assert text["task"]["options"]["objective"] == "masked"


def test_smoke_is_the_cpu_config_shrunk():
    for exp in EXPERIMENTS.values():
        cpu, smoke = exp.configs("cpu"), exp.configs("smoke")
        for part in cpu:
            assert smoke[part]["widths"] == sorted(cpu[part]["widths"])[:2]
            assert smoke[part]["train"]["steps"] < cpu[part]["train"]["steps"]
            assert smoke[part]["model"] == cpu[part]["model"]
            assert set(smoke[part]["probes"]) == set(cpu[part]["probes"])


def test_write_configs_writes_loadable_tomls_and_keeps_edits(tmp_path):
    exp = EXPERIMENTS["power-law"]
    paths = write_configs(exp, "cpu", tmp_path)
    assert load_config(paths["main"]) == parse_config(exp.configs("cpu")["main"])
    edited = paths["main"].read_text().replace("steps = 3000", "steps = 77")
    paths["main"].write_text(edited)
    write_configs(exp, "cpu", tmp_path)
    assert load_config(paths["main"]).train.steps == 77
    with pytest.raises(ConfigError, match="use another output directory"):
        write_configs(exp, "gpu", tmp_path)


def test_cli_list_names_every_experiment_with_costs(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for exp in EXPERIMENTS.values():
        assert exp.name in out and exp.figures in out
    assert out.count("cpu: ~") == len(EXPERIMENTS) and out.count("GPU-h") == 2 * len(EXPERIMENTS)
    assert "?" not in list_table()


def test_cli_rejects_unknown_experiment_and_scale(capsys):
    assert main(["reproduce", "nosuch"]) == 2
    assert "allowed" in capsys.readouterr().err
    assert main(["reproduce", "logits", "--scale", "huge"]) == 2
    assert "smoke" in capsys.readouterr().err


def test_report_puts_paper_vs_measured_first_for_reproduce_sweeps(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "N_BOOT", 10)
    ds = logits(decay=0.5)
    ds.attrs["config"] = 'name = "paper:logits:resnet:cpu"\n'
    html = report(ds, tmp_path / "a" / "report.html").read_text()
    assert html.index('id="paper"') < html.index('id="verdict"')
    for c in EXPERIMENTS["logits"].claims_of("resnet"):
        assert f'data-claim="{c.id}"' in html
    assert html.count('data-verdict="PASS"') == 3
    mine = Context(ds=ds, fig_dir=tmp_path, config={"name": "mine"})
    assert not paper.applies(mine)  # left out of other sweeps' reports, without a note
    assert SECTIONS[0].id == "paper" and SECTIONS[0].applies is paper.applies
