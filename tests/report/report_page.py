"""Build a report from a Dataset and parse the page: what the report tests look at."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import xarray as xr

import widthscan.report


class PageParser(HTMLParser):
    """Collects what the tests look at: section ids, images, figure names, table rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.img_srcs: list[str] = []
        self.img_sizes: list[tuple[int, int]] = []
        self.figures: list[str] = []
        self.rows: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "img":
            self.img_srcs.append(a.get("src", ""))
            self.img_sizes.append((int(a.get("width", 0)), int(a.get("height", 0))))
        elif tag == "figure" and "data-figure" in a:
            self.figures.append(a["data-figure"])
        elif tag == "tr" and "data-param" in a:
            self.rows.append(a)
        for key in ("href", "src"):
            if key in a and not str(a[key]).startswith("data:"):
                self.links.append(a[key])

    def handle_data(self, data):
        self.text.append(data)


@dataclass
class Built:
    html: Path
    ds: xr.Dataset
    page: PageParser
    source: str
    caught: list = field(default_factory=list)


def build(ds: xr.Dataset, out: Path) -> Built:
    """Write the report of ``ds`` to out/report.html with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = widthscan.report.report(ds, out / "report.html")
    source = path.read_text(encoding="utf-8")
    page = PageParser()
    page.feed(source)
    page.close()
    return Built(path, ds, page, source)
