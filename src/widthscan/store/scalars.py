"""The append-only scalar log: one JSON object per line, per logged step, per member.

JSON has no NaN or infinity, so non-finite floats are written as the strings
"nan", "inf" and "-inf" and decoded back to floats when read. Every line ends with
``"_crc":"<crc32 of the line without it, hex>"``: a flipped bit makes the line invalid
(dropped and counted) instead of a wrong number. Lines of older files without the field
are accepted when no line of the file has one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

_NONFINITE_OUT = {"nan": "nan", "inf": "inf", "-inf": "-inf"}
_NONFINITE_IN = {
    "nan": math.nan,
    "NaN": math.nan,
    "inf": math.inf,
    "Infinity": math.inf,
    "-inf": -math.inf,
    "-Infinity": -math.inf,
}
KEY_COLUMNS = ("step", "seed")
CRC_KEY = "_crc"
_CRC_TAIL = re.compile(rb',"_crc":"([0-9a-f]{8})"\}$')


def _as_int(value: Any, name: str) -> int:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"scalar row field {name!r} must be an integer, got {value!r}")
    return int(value)


def _encode_value(name: str, value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"scalar {name!r} must be a single number, got {value!r}") from e
    if isinstance(value, float) and not math.isfinite(value):
        return _NONFINITE_OUT[repr(value)]
    return value


def encode_row(row: Mapping[str, Any]) -> str:
    """One JSONL line (without newline) for a row that has int ``step`` and ``seed``."""
    missing = [k for k in KEY_COLUMNS if k not in row]
    if missing:
        raise ValueError(f"scalar row is missing {missing}: {dict(row)!r}")
    out = {str(k): _encode_value(str(k), v) for k, v in row.items()}
    for k in KEY_COLUMNS:
        out[k] = _as_int(row[k], k)
    out.pop(CRC_KEY, None)
    body = json.dumps(out, allow_nan=False, separators=(",", ":"))
    return f'{body[:-1]},"{CRC_KEY}":"{zlib.crc32(body.encode()):08x}"}}'


def _crc_ok(line: bytes) -> bool | None:
    """True/False: the line's checksum matches/does not; None: the line carries none."""
    m = _CRC_TAIL.search(line.rstrip(b"\r"))
    if m is None:
        return None
    body = line[: m.start()] + b"}"
    return zlib.crc32(body) == int(m.group(1), 16)


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """Newline-terminated JSONL bytes for ``rows``."""
    return "".join(encode_row(r) + "\n" for r in rows).encode("utf-8")


def _decode_value(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE_IN:
        return _NONFINITE_IN[value]
    return value


@dataclass
class ParsedLines:
    """Lines of a scalar log that parsed, with what had to be dropped.

    records: decoded rows in file order; raw: the corresponding line bytes (with newline).
    torn_tail: the file ended in a partial line (no newline), which was dropped.
    bad_lines: complete lines that were not valid rows or failed their checksum (dropped).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    torn_tail: bool = False
    bad_lines: int = 0


def _decode_line(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    obj.pop(CRC_KEY, None)
    try:
        row = {str(k): _decode_value(v) for k, v in obj.items()}
        for k in KEY_COLUMNS:
            row[k] = _as_int(row[k], k)
    except (KeyError, ValueError, TypeError):
        return None
    return row


def parse_lines(data: bytes) -> ParsedLines:
    """Parse JSONL bytes tolerantly: a final line without newline is treated as torn."""
    out = ParsedLines()
    lines = data.split(b"\n")
    tail = lines.pop()
    if tail.strip():
        out.torn_tail = True
    checks = [_crc_ok(line) for line in lines]
    checked = any(c is not None for c in checks)
    for line, ok in zip(lines, checks):
        if not line.strip():
            continue
        row = None if (checked and not ok) else _decode_line(line)
        if row is None:
            out.bad_lines += 1
            continue
        out.records.append(row)
        out.raw.append(line + b"\n")
    return out


def frame_digest(df: pd.DataFrame) -> str:
    """sha256 over the column names, dtypes and values of ``df`` (index ignored)."""
    h = hashlib.sha256()
    for col in df.columns:
        values = df[col].to_numpy()
        h.update(f"{col}\0{values.dtype}\0{len(values)}\0".encode())
        if values.dtype.hasobject:
            h.update(json.dumps([str(v) for v in values]).encode())
        else:
            h.update(values.tobytes())
    return h.hexdigest()


def drop_superseded(df: pd.DataFrame) -> pd.DataFrame:
    """Resolve resumes: a row is dropped if a later row (file order) of the same seed has
    a step <= its step. Without resumes this keeps everything; after a resume from step s
    that was not preceded by a truncation, the re-logged steps win and stale ones go.
    """
    if df.empty:
        return df
    rev = df.iloc[::-1]
    later_min = rev.groupby("seed", sort=False)["step"].cummin()
    later_min = later_min.groupby(rev["seed"], sort=False).shift(1)
    keep = later_min.isna() | (rev["step"] < later_min)
    return df.loc[keep.reindex(df.index).to_numpy()]


def records_to_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame sorted by (step, seed) with int64 keys and numeric metric columns."""
    if not records:
        return pd.DataFrame({k: pd.Series(dtype="int64") for k in KEY_COLUMNS})
    df = pd.DataFrame.from_records(records)
    for k in KEY_COLUMNS:
        df[k] = df[k].astype("int64")
    df = drop_superseded(df)
    for col in df.columns:
        if col not in KEY_COLUMNS and df[col].dtype == object:
            try:
                df[col] = pd.to_numeric(df[col])
            except (ValueError, TypeError):
                pass
    cols = list(KEY_COLUMNS) + [c for c in df.columns if c not in KEY_COLUMNS]
    return df[cols].sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
