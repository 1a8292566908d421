"""Checkpoints: ``checkpoint.safetensors`` + ``checkpoint.json``, each replaced atomically.

Both carry the same random nonce. The tensors file also embeds the metadata, so it
is self-consistent on its own: if a crash lands between the two renames, the pair
is detected as torn and the embedded metadata (which belongs to those tensors) is used.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from widthscan.store.atomic import atomic_path, atomic_write_json, to_json

if TYPE_CHECKING:
    import torch

TENSORS_FILE = "checkpoint.safetensors"
META_FILE = "checkpoint.json"
ARCHIVE_DIR = "checkpoints"


class StoreWarning(UserWarning):
    """Something on disk was inconsistent and was worked around."""


def _prepare(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"checkpoint entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[str(name)] = t
    return out


def save_checkpoint(
    run_dir: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Write tensors (any dtype incl. bf16; moved to CPU) and JSON-able ``meta``."""
    from safetensors.torch import save_file

    nonce = secrets.token_hex(8)
    meta = dict(meta)
    st_meta = {"nonce": nonce, "meta": to_json(meta, indent=None)}
    with atomic_path(run_dir / TENSORS_FILE) as tmp:
        save_file(_prepare(tensors), str(tmp), metadata=st_meta)
    atomic_write_json(run_dir / META_FILE, {"nonce": nonce, "meta": meta})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def load_checkpoint(
    run_dir: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(tensors, meta)`` of the last checkpoint, or None if there is none usable.

    A torn pair (nonces differ) warns with StoreWarning and returns the tensors with the
    metadata embedded in them, rewriting checkpoint.json to match.
    """
    from safetensors import safe_open

    st_path, js_path = run_dir / TENSORS_FILE, run_dir / META_FILE
    if not st_path.exists():
        if js_path.exists():
            warnings.warn(
                f"{js_path} exists without {TENSORS_FILE}; ignoring the checkpoint",
                StoreWarning,
                stacklevel=2,
            )
        return None
    try:
        with safe_open(str(st_path), framework="pt", device=str(device)) as f:
            st_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        warnings.warn(
            f"cannot read {st_path} ({e}); ignoring the checkpoint", StoreWarning, stacklevel=2
        )
        return None
    js = _read_json(js_path)
    if js is not None and js.get("nonce") is not None and js.get("nonce") == st_meta.get("nonce"):
        return tensors, js.get("meta", {})
    embedded = st_meta.get("meta")
    if embedded is None:
        warnings.warn(
            f"torn checkpoint in {run_dir}: {META_FILE} does not match {TENSORS_FILE} and the "
            "tensors carry no metadata; ignoring the checkpoint",
            StoreWarning,
            stacklevel=2,
        )
        return None
    warnings.warn(
        f"torn checkpoint in {run_dir}: {META_FILE} does not match {TENSORS_FILE} (a crash "
        "between the two writes); using the metadata stored with the tensors",
        StoreWarning,
        stacklevel=2,
    )
    meta = json.loads(embedded)
    atomic_write_json(js_path, {"nonce": st_meta.get("nonce"), "meta": meta})
    return tensors, meta


def remove_checkpoint(run_dir: Path) -> None:
    """Delete the checkpoint pair (the metadata first, so a crash between the two leaves
    tensors that carry their own metadata, never metadata without tensors)."""
    for name in (META_FILE, TENSORS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def archive_checkpoint(run_dir: Path, step: int) -> Path:
    """Hard-link (or copy) the current checkpoint tensors to
    ``checkpoints/<step:09d>.safetensors`` (they embed their metadata)."""
    import shutil

    target = run_dir / ARCHIVE_DIR / f"{int(step):09d}.safetensors"
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(run_dir / TENSORS_FILE, target)
    except OSError:
        shutil.copyfile(run_dir / TENSORS_FILE, target)
    return target
