"""Execute one run of a sweep: build it from its spec, resume, train, record. A thin shell."""

from __future__ import annotations

import errno
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from widthscan import probes
from widthscan.measurement import Measurement
from widthscan.stack.losses import IGNORE_INDEX
from widthscan.store import RunStore, run_dir
from widthscan.sweep.plan import (
    RunSpec,
    loss_name,
    make_factory,
    make_task,
    resolve_device,
)
from widthscan.sweep.trackers import make_tracker
from widthscan.train import Ensemble, make_schedule
from widthscan.train.loop import LoopHooks, train_loop

FLUSH_EVERY = 25
FLUSH_S = 2.0  # logged losses reach scalars.jsonl at least this often (live status, progress)
FINISHED = ("done", "diverged")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def build_ensemble(spec: RunSpec, task) -> Ensemble:
    cfg = spec.sweep_config()
    opt, train = cfg.optimizer, cfg.train
    schedule = make_schedule(cfg.schedule.kind, train.steps, cfg.schedule.warmup_steps,
                             cfg.schedule.final_factor)
    return Ensemble(
        make_factory(cfg, task.spec, spec.allow_import), spec.width, cfg.base_width,
        spec.param, opt.name,
        cfg.seed_list, opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
        weight_decay=opt.weight_decay, betas=tuple(opt.betas), eps=opt.eps,
        loss=loss_name(cfg, task.spec), schedule=schedule,
        device=resolve_device(train.device), precision=train.precision,
        init_gain=train.init_gain, zero_init=train.zero_init,
    )


def build_probes(spec: RunSpec) -> probes.ProbeSuite | None:
    cfg = spec.sweep_config()
    if not cfg.probes:
        return None
    return probes.ProbeSuite({name: p.suite_options() for name, p in cfg.probes.items()},
                             cfg.train.steps)


def _status(store: RunStore, spec: RunSpec, ens: Ensemble, state: str, **extra: Any) -> dict:
    cfg = spec.sweep_config()
    status = {
        "state": state, "step": ens.step_count, "steps": cfg.train.steps,
        "seeds": ens.seeds, "param": spec.param, "width": spec.width,
        "diverged": {str(s): d for s, d in zip(ens.seeds, ens.diverged_at) if d is not None},
        **store.damage,
        **extra,
    }
    store.write_status(status)
    return status


def execute(spec: RunSpec, threads: int | None = None) -> dict:
    """Run (or resume, or skip if finished) one (param, width) run; returns its status.

    Exceptions are recorded as state "failed" with the traceback in error.txt, except a
    full disk (OSError ENOSPC/EDQUOT), which is raised: nothing more can be written, and
    rerunning once there is space resumes from the last checkpoint.
    """
    if threads:
        torch.set_num_threads(threads)
    store = RunStore(run_dir(spec.sweep_dir, spec.param, spec.width))
    previous = store.read_status()
    if previous and previous.get("state") in FINISHED:
        if previous.get("repaired"):
            store.write_status(previous)
        return previous
    ens = None
    try:
        cfg = spec.sweep_config()
        store.write_config({**spec.config, "param": spec.param, "width": spec.width})
        task = make_task(cfg)
        ens = build_ensemble(spec, task)
        suite = build_probes(spec)
        checkpoint = store.load_checkpoint()
        if checkpoint is not None:
            tensors, meta = checkpoint
            ens.load_state_dict({"tensors": _prefixed(tensors, "ensemble."),
                                 "meta": meta["ensemble"]})
            if suite is not None:
                suite.load_state_dict({**_prefixed(tensors, "probes."),
                                       **meta.get("probes", {})})
        store.truncate_scalars(after_step=ens.step_count - 1)
        store.check_resumed_scalars(checkpoint[1] if checkpoint else {})
        _status(store, spec, ens, "running")
        tracker = make_tracker(cfg.tracker.kind, store.path, spec.name, cfg.tracker.project,
                               spec.config)
        state = _train(spec, store, task, ens, suite, tracker)
        tracker.close()
        written = store.finalize()
        status = _status(store, spec, ens, state)
        store.drop_checkpoint(cfg.store.keep_checkpoints)
        if written and not cfg.store.keep_scalar_log:
            store.drop_scalar_log()
        return status
    except OSError as err:
        if err.errno not in DISK_FULL:
            return _failed(store, spec, ens)
        step = f" at step {ens.step_count}" if ens is not None else ""
        raise OSError(err.errno, f"{err.strerror or err} (run {spec.name}{step})",
                      err.filename) from None
    except Exception:
        return _failed(store, spec, ens)


def _failed(store: RunStore, spec: RunSpec, ens: Ensemble | None) -> dict:
    store.write_error(traceback.format_exc())
    if ens is None:
        status = {"state": "failed", "step": 0, "param": spec.param, "width": spec.width}
        store.write_status(status)
        return status
    return _status(store, spec, ens, "failed")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _train(spec: RunSpec, store: RunStore, task, ens: Ensemble, suite, tracker) -> str:
    cfg = spec.sweep_config()
    train = cfg.train
    device, dtype = ens.device, ens.dtype
    rows: list[dict] = []
    flushed = [time.monotonic()]

    def batch(t: int):
        return task.batch(t, train.batch_size, device=device, dtype=dtype)

    def on_losses(t: int, losses: torch.Tensor) -> None:
        lr = ens.lr * ens.schedule(t)
        values = losses.tolist()
        if t % train.log_every == 0 or t == train.steps - 1:
            rows.extend({"step": t, "seed": s, "loss": v, "lr": lr}
                        for s, v in zip(ens.seeds, values))
            tracker.log(t, {f"loss/seed={s}": v for s, v in zip(ens.seeds, values)})
        if rows and (len(rows) >= FLUSH_EVERY * ens.k
                     or time.monotonic() - flushed[0] >= FLUSH_S):
            store.append_scalars(rows)
            rows.clear()
            flushed[0] = time.monotonic()

    hooks = LoopHooks(on_losses=on_losses, checkpoint_every=train.checkpoint_every)

    def on_checkpoint(done: int) -> None:
        store.append_scalars(rows)
        rows.clear()
        state = ens.state_dict()
        tensors = {f"ensemble.{k}": v for k, v in state["tensors"].items()}
        meta: dict[str, Any] = {"ensemble": state["meta"]}
        if suite is not None:
            probe_state = suite.state_dict()
            tensors.update({f"probes.{k}": v for k, v in probe_state.items()
                            if torch.is_tensor(v)})
            meta["probes"] = {k: v for k, v in probe_state.items() if not torch.is_tensor(v)}
        store.sync_scalars()
        meta["scalar_rows"] = store.scalar_rows
        meta["damage"] = store.damage
        store.save_checkpoint(tensors, meta)
        if cfg.store.keep_checkpoints == "all":
            store.archive_checkpoint(done)
        _status(store, spec, ens, "running")

    hooks.on_checkpoint = on_checkpoint
    if suite is not None:
        n_probe = min(cfg.task.probe_examples, task.spec.probe_pool_size or 10**9)
        px, py = task.probe_set(n_probe)
        px, py = px.to(device), py.to(device)
        if px.is_floating_point():
            px = px.to(dtype)
        store.write_probe("targets", 0, {"targets": probe_targets(
            py, ens.k, sequence=task.spec.seq_len is not None)})
        sharp = suite.options.get("sharpness", {}).get("batch_size") or train.batch_size
        bx, by = task.batch(0, sharp, device=device, dtype=dtype)

        def on_probe(t: int) -> None:
            results = suite.measure(suite.due(t), ens, t, px, py, bx, by)
            for name, measurements in results.items():
                store.write_probe(name, t, measurements)

        hooks.probes_due = lambda t: bool(suite.due(t))
        hooks.on_probe = on_probe
    return train_loop(ens, batch, train.steps, hooks)


def probe_targets(y: torch.Tensor, k: int, sequence: bool = False) -> Measurement:
    """The probe set's targets as a probe variable (the same for all k members): class
    labels (P,) with dims ("example",), regression targets (P, C) ("example", "output");
    for a ``sequence`` task (y of shape (P, S)) the target token at every predicted
    position (y != -100), dims ("position",), numbered p * S + s as the logits probe's."""
    t = y.detach().cpu().numpy()
    if sequence:
        flat = t.reshape(-1)
        where = np.flatnonzero(flat != IGNORE_INDEX)
        return Measurement(("position",), np.broadcast_to(flat[where], (k, where.size)),
                           {"position": where})
    dims = ("example",) if t.ndim == 1 else ("example", "output")
    return Measurement(dims, np.broadcast_to(t, (k, *t.shape)), {"example": np.arange(len(t))})


def run_path(spec: RunSpec) -> Path:
    return run_dir(spec.sweep_dir, spec.param, spec.width)
