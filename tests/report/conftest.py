"""Fixtures for the report tests: reports built once per module from synthetic Datasets."""

from __future__ import annotations

import pytest
from report_data import synthetic_dataset
from report_page import Built, build


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Built:
    """The dataset of the brief: 2 params x 4 widths x 3 seeds, no attention, no targets."""
    return build(synthetic_dataset(), tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def no_kernel(tmp_path_factory) -> Built:
    return build(synthetic_dataset().drop_vars("kernel"), tmp_path_factory.mktemp("nokernel"))


@pytest.fixture(scope="module")
def everything(tmp_path_factory) -> Built:
    """With attention maps and probe targets, and only the variables their sections and
    the sections that change with targets use (the others are covered by ``full``)."""
    ds = synthetic_dataset(attention=True, targets=True)
    ds = ds[["logits", "attention", "entk", "targets"]].assign_attrs(ds.attrs)
    # the store renames a dim that clashes between probes (different sizes) to
    # <probe>_<dim>; the report must not depend on the plain names
    ds["logits"] = ds["logits"].rename(example="logits_example")
    ds["entk"] = ds["entk"].rename(example="entk_example", example2="entk_example2")
    return build(ds, tmp_path_factory.mktemp("everything"))
