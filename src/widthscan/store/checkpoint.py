"""Checkpoints: ``checkpoint.safetensors`` + ``checkpoint.json``, each replaced atomically.

Both carry the same random nonce. The tensors file also embeds the metadata and a sha256
over the metadata and every tensor's name, dtype, shape and bytes, so it is
self-consistent on its own: if a crash lands between the two renames, the pair is
detected as torn and the embedded metadata (which belongs to those tensors) is used; a
flipped bit fails the checksum. The checkpoint before the newest is kept as
``checkpoint.prev.safetensors`` and used when the newest is damaged.
"""

from __future__ import annotations

import contextlib
import hashlib
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
PREVIOUS_FILE = "checkpoint.prev.safetensors"
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


def digest(tensors: Mapping[str, torch.Tensor], meta_text: str) -> str:
    """sha256 over ``meta_text`` and each tensor's name, dtype, shape and bytes (name order)."""
    import torch

    h = hashlib.sha256(meta_text.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    run_dir: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    """Write tensors (any dtype incl. bf16; moved to CPU) and JSON-able ``meta``; the
    previous checkpoint becomes checkpoint.prev.safetensors."""
    from safetensors.torch import save_file

    nonce = secrets.token_hex(8)
    meta = dict(meta)
    prepared = _prepare(tensors)
    meta_text = to_json(meta, indent=None)
    st_meta = {"nonce": nonce, "meta": meta_text, "sha256": digest(prepared, meta_text)}
    with atomic_path(run_dir / TENSORS_FILE) as tmp:
        save_file(prepared, str(tmp), metadata=st_meta)
        with contextlib.suppress(FileNotFoundError):
            os.replace(run_dir / TENSORS_FILE, run_dir / PREVIOUS_FILE)
    atomic_write_json(run_dir / META_FILE, {"nonce": nonce, "meta": meta})


def read_meta(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint's metadata from checkpoint.json (no tensors read), or None."""
    js = _read_json(run_dir / META_FILE)
    meta = js.get("meta") if isinstance(js, dict) else None
    return meta if isinstance(meta, dict) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_verified(path: Path, device: str | torch.device) -> tuple[dict, dict] | str:
    """``(tensors, safetensors metadata)`` if the file reads and its checksum holds (files
    written before checksums carry none and are accepted), else why not."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            st_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        return f"cannot read it ({type(e).__name__}: {e})"
    want = st_meta.get("sha256")
    if want is not None and want != digest(tensors, st_meta.get("meta", "")):
        return "its sha256 does not match its contents"
    return {k: v.to(device) for k, v in tensors.items()}, st_meta


def load_checkpoint(
    run_dir: Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(tensors, meta)`` of the last checkpoint, or None if there is none usable.

    The tensors' checksum is verified; a damaged newest checkpoint warns (StoreWarning) and
    the previous one is used. A torn pair (nonces differ) warns and returns the tensors with
    the metadata embedded in them, rewriting checkpoint.json to match.
    """
    st_path, js_path = run_dir / TENSORS_FILE, run_dir / META_FILE
    prev_path = run_dir / PREVIOUS_FILE
    if not st_path.exists() and not prev_path.exists():
        if js_path.exists():
            warnings.warn(
                f"{js_path} exists without {TENSORS_FILE}; ignoring the checkpoint",
                StoreWarning,
                stacklevel=2,
            )
        return None
    read = _read_verified(st_path, device) if st_path.exists() else "it is missing"
    if isinstance(read, str):
        return _previous(run_dir, f"{st_path}: {read}", device)
    tensors, st_meta = read
    js = _read_json(js_path)
    embedded = st_meta.get("meta")
    if embedded is None:
        if js is not None and js.get("nonce") is not None and \
                js.get("nonce") == st_meta.get("nonce"):
            return tensors, js.get("meta", {})
        if prev_path.exists():
            return _previous(run_dir, f"torn checkpoint in {run_dir} without metadata", device)
        warnings.warn(
            f"torn checkpoint in {run_dir}: {META_FILE} does not match {TENSORS_FILE} and the "
            "tensors carry no metadata; ignoring the checkpoint",
            StoreWarning,
            stacklevel=2,
        )
        return None
    meta = json.loads(embedded)
    if js is None or js.get("nonce") != st_meta.get("nonce") or js.get("meta") != meta:
        warnings.warn(
            f"torn checkpoint in {run_dir}: {META_FILE} does not match {TENSORS_FILE} (a crash "
            "between the two writes, or damage); using the checksummed metadata stored with "
            "the tensors",
            StoreWarning,
            stacklevel=2,
        )
        atomic_write_json(js_path, {"nonce": st_meta.get("nonce"), "meta": meta})
    return tensors, meta


def _previous(run_dir: Path, reason: str, device: str | torch.device
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Fall back to checkpoint.prev.safetensors (verified), warning why; None if unusable."""
    path = run_dir / PREVIOUS_FILE
    read = _read_verified(path, device) if path.exists() else "there is none"
    if isinstance(read, str) or read[1].get("meta") is None:
        why = read if isinstance(read, str) else "it carries no metadata"
        warnings.warn(f"{reason}; the previous checkpoint is unusable too ({why}): the run "
                      "starts over", StoreWarning, stacklevel=3)
        return None
    tensors, st_meta = read
    meta = json.loads(st_meta["meta"])
    warnings.warn(f"{reason}; resuming from the previous checkpoint (step "
                  f"{_step(meta)})", StoreWarning, stacklevel=3)
    return tensors, meta


def _step(meta: dict[str, Any]) -> Any:
    ens = meta.get("ensemble")
    return (ens if isinstance(ens, dict) else meta).get("step", "?")


def remove_checkpoint(run_dir: Path) -> None:
    """Delete the checkpoint's tensors (and the previous checkpoint's) of a finished run;
    checkpoint.json stays (a few hundred bytes), so a damaged status.json can still be
    rebuilt as finished from it."""
    for name in (TENSORS_FILE, PREVIOUS_FILE):
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
