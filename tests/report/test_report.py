"""ws.report on synthetic sweeps: one valid self-contained page, figures on disk, and
exactly the sections that were measured."""

from __future__ import annotations

import base64
import itertools
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from report_data import PARAMS, WIDTHS, synthetic_dataset
from report_page import build

import widthscan
import widthscan.report
from widthscan.report import SECTIONS, sections
from widthscan.report.context import Context, parse_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# What the dataset of the brief measured: loss, lr, probe_loss, logits, kernel,
# preact_*, sharpness, entk (no attention, no targets).
BASE_SECTIONS = ["verdict", "loss", "probe-loss", "logits", "successive", "kernel",
                 "preactivations", "sharpness", "power-law", "spectra", "consistency",
                 "extrapolation", "config"]


def _decode(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):], validate=True)


def test_page_parses_and_is_self_contained(full):
    page = full.page
    assert full.html.name == "report.html" and full.html.is_file()
    assert full.source.startswith("<!DOCTYPE html>")
    assert "script" not in page.tags and "<script" not in full.source.lower()
    assert "iframe" not in page.tags and "link" not in page.tags
    # the only links: in-page anchors and the PDF copies next to the page
    for link in page.links:
        assert link.startswith("#") or (link.startswith("figures/") and link.endswith(".pdf")), link
    assert "http://" not in full.source and "https://" not in full.source


def test_every_image_is_an_embedded_png(full):
    srcs = full.page.img_srcs
    assert len(srcs) == len(full.page.figures) >= 12
    for src in srcs:
        data = _decode(src)
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_every_figure_is_written_as_png_and_pdf(full):
    fig_dir = full.html.parent / "figures"
    names = full.page.figures
    assert len(set(names)) == len(names)
    for name, src in zip(names, full.page.img_srcs):
        png, pdf = fig_dir / f"{name}.png", fig_dir / f"{name}.pdf"
        assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000, name
        assert png.read_bytes() == _decode(src)
        assert pdf.read_bytes().startswith(b"%PDF")


def test_figures_are_readable_size(full):
    for (w, h), name in zip(full.page.img_sizes, full.page.figures):
        assert 600 <= w <= 1200 and 250 <= h <= 1000, (name, w, h)


def test_sections_are_exactly_what_was_measured(full):
    assert full.page.sections == BASE_SECTIONS
    assert [s.id for s in SECTIONS if s.id in BASE_SECTIONS] == BASE_SECTIONS


def test_dropping_kernel_drops_its_section(full, no_kernel):
    assert no_kernel.page.sections == [s for s in BASE_SECTIONS if s != "kernel"]
    assert "kernel_gram" in full.page.figures
    assert not {"kernel_gram", "kernel_distance"} & set(no_kernel.page.figures)
    assert "Feature kernels</strong>: not measured" in no_kernel.source


def test_attention_and_targets_add_their_sections(everything):
    assert everything.page.sections == ["verdict", "logits", "successive", "attention",
                                        "bias-variance", "spectra", "consistency", "config"]
    for name in ("attention_maps", "attention_distance", "bias_variance", "variance_ensemble",
                 "task_power", "kernel_flow"):
        assert name in everything.page.figures
    assert "Like with like, both on the odd-numbered probe examples" in everything.source
    assert "its weighting was not recorded" in everything.source


def test_missing_targets_are_explained(full):
    assert "bias-variance" not in full.page.sections
    assert "no &#x27;targets&#x27; in the Dataset" in full.source
    assert "no &#x27;targets&#x27; variable" in full.source  # the spectra section says so too


def test_verdict_lists_every_param_and_width(full):
    rows = {(r["data-param"], int(r["data-width"])) for r in full.page.rows}
    assert rows == set(itertools.product(PARAMS, WIDTHS))
    assert len(full.page.rows) == len(PARAMS) * len(WIDTHS)
    # the diverged member (sp, 256, seed 1 at step 44) shows up
    assert "1 @ 44" in full.source and "2/3" in full.source


def test_config_and_version_are_stated(full):
    assert "<pre>" in full.source and "[optimizer]" in full.source
    assert full.ds.attrs["widthscan_version"] in full.source
    assert widthscan.__version__ in full.source


def test_no_pyplot_figures_leak(full):
    assert plt.get_fignums() == []


def _small(n_widths: int = 2, keep=("probe_loss",)):
    """A cheap Dataset (one figure) for the tests that are not about the figures."""
    ds = synthetic_dataset(diverge=False)
    return ds[list(keep)].isel(width=slice(0, n_widths)).assign_attrs(ds.attrs)


def test_analysis_caveats_become_notes_not_warnings(tmp_path):
    # build() turns every warning into an error; this records any that would slip past it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build(_small(n_widths=3, keep=("loss", "probe_loss")), tmp_path)
    assert caught == []
    assert "fewer than 4 widths" in built.source
    assert built.page.sections == ["verdict", "loss", "probe-loss", "power-law",
                                   "extrapolation", "config"]


def test_one_width_one_seed(tmp_path):
    ds = _small(n_widths=1, keep=("loss", "probe_loss")).isel(seed=[0])
    built = build(ds, tmp_path)
    assert built.page.sections == ["verdict", "loss", "probe-loss", "config"]
    assert "needs at least 3 widths" in built.source
    assert len(built.page.rows) == len(PARAMS)


def test_text_from_the_data_is_escaped(tmp_path):
    ds = _small()
    ds.attrs["config"] = 'name = "<script>alert(1)</script>"\n'
    built = build(ds, tmp_path)
    assert "<script" not in built.source.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in built.source


def test_sweep_directory_input(tmp_path, monkeypatch):
    ds = _small()
    seen = []

    def fake_load(path):
        seen.append(path)
        return ds

    monkeypatch.setattr(widthscan.store, "load", fake_load)
    out = widthscan.report.report(tmp_path)
    assert seen == [tmp_path]
    assert out == tmp_path / "report.html" and out.is_file()
    assert (tmp_path / "figures" / "probe_loss.png").is_file()
    assert widthscan.report.report(tmp_path, tmp_path / "x" / "r.html").is_file()


def test_bad_input():
    with pytest.raises(ValueError, match="path"):
        widthscan.report.report(_small())
    with pytest.raises(TypeError):
        widthscan.report.report(np.zeros(3), "r.html")


def test_top_level_alias(tmp_path):
    import widthscan as ws

    # whether ws.report resolves to the function or (once the package is imported) to
    # the package, calling it writes the report
    for i in range(2):
        assert ws.report(_small(), tmp_path / f"r{i}.html").is_file()


def test_sharpness_threshold_follows_a_logged_schedule(tmp_path):
    ds = synthetic_dataset()
    small = ds[["sharpness", "lr"]].assign_attrs(ds.attrs)
    small.attrs["config"] += '\n[schedule]\nkind = "cosine"\nwarmup_steps = 5\n'
    small["lr"] = small["lr"] * np.minimum(1.0, small["step"] / 5)  # lr = 0 at step 0
    built = build(small, tmp_path)
    assert built.page.sections == ["verdict", "sharpness", "config"]
    assert "the logged learning rate" in built.source


def test_preactivation_scale_figure_follows_preact_stats(full, tmp_path):
    assert "preact_scale" in full.page.figures
    without = build(synthetic_dataset().drop_vars("preact_stats"), tmp_path)
    assert "preactivations" in without.page.sections
    assert "preact_scale" not in without.page.figures


def test_sharpness_caption_says_which_hessian(tmp_path):
    ds = synthetic_dataset()
    small = ds[["sharpness"]].assign_attrs(ds.attrs)
    raw = build(small, tmp_path / "raw")
    assert "learning-rate scales are not included" in raw.source
    flags = xr.ones_like(small["sharpness"].isel(eigen=0, drop=True))
    pre = build(small.assign(sharpness_preconditioned=flags), tmp_path / "pre")
    assert "P^½ H P^½" in pre.source
    assert "learning-rate scales are not included" not in pre.source


def test_sharpness_under_adam_draws_its_threshold_only_for_its_matrix(tmp_path):
    """Adam's edge of stability is at (2 + 2 beta1) / ((1 - beta1) lr) for Adam's
    preconditioned Hessian (code 2); a raw Hessian under Adam gets no line."""
    ds = synthetic_dataset()
    config = ds.attrs["config"].replace('name = "sgd"', 'name = "adam"\nbetas = [0.8, 0.999]')
    small = ds[["sharpness"]].assign_attrs(ds.attrs, config=config)
    raw = build(small, tmp_path / "raw")
    assert "No threshold line: with adam" in raw.source
    flags = xr.full_like(small["sharpness"].isel(eigen=0, drop=True), 2.0)
    adam = small.assign(sharpness_preconditioned=flags)
    pre = build(adam, tmp_path / "pre")
    assert "D^½ H D^½" in pre.source and "(2+2β₁)/((1−β₁)η)" in pre.source
    ctx = Context(ds=adam, fig_dir=tmp_path, config=parse_config(config))
    lines, _ = sections._eos_lines(ctx, sections._sharpness_code(ctx))
    assert lines["mup"][0][0] == pytest.approx((2 + 2 * 0.8) / (1 - 0.8) / 0.5)


@pytest.mark.parametrize("code", [0.0, 1.0])
def test_spectra_names_the_stored_kernel_and_flows_only_sgds(tmp_path, code):
    ds = synthetic_dataset(targets=True)
    small = ds[["logits", "entk", "targets", "lr"]].assign_attrs(ds.attrs)
    flags = xr.full_like(small["entk"].isel(example=0, example2=0, drop=True), code)
    small = small.assign(entk_weighting=flags)
    ctx = Context(ds=small, fig_dir=tmp_path, config=parse_config(ds.attrs["config"]))
    out = sections.spectra(ctx)
    text = " ".join(out.paragraphs + [f.caption for f in out.figures])
    names = [f.name for f in out.figures]
    if code:
        assert "lr-weighted eNTK" in text and "kernel_flow" in names
        flow = ctx._cache["flow_initial"][0]
        assert flow.dims == ("param", "width", "step")
        # every (param, width) but the one with a diverged member (sp, 256)
        assert int(np.isfinite(flow).all("step").sum()) == flow.sizes["param"] * flow.sizes[
            "width"] - 1
    else:
        assert "raw-parameter eNTK" in text and "kernel_flow" not in names
        assert "Kernel-flow prediction left out: the stored eNTK is the raw" in text
