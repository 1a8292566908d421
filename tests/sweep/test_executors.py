"""Dask (with a worker killed mid-run) and submitit give the local executor's numbers."""

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
from sweep_helpers import small_config

import widthscan as ws
from widthscan.store import load, load_status


def same(a, b):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_dask_local_cluster_survives_a_killed_worker(tmp_path):
    text = small_config(steps=600, every=20).replace("widths = [16, 32]",
                                                 "widths = [16, 32, 64]")
    local = tmp_path / "local"
    ws.Sweep.from_string(text).run(local, progress=False)

    killed = []

    def kill_one_worker():
        """Once a run has checkpointed mid-way, SIGKILL one dask worker (a leaf below a nanny)."""
        deadline = time.time() + 120
        while time.time() < deadline:
            states = [json.loads(f.read_text()) for f in (tmp_path / "dask").rglob("status.json")]
            if any(st["state"] == "running" and 0 < st["step"] for st in states):
                break
            time.sleep(0.1)
        leaves = [p for p in psutil.Process().children(recursive=True) if not p.children()]
        workers = [p for p in leaves if "spawn" in " ".join(p.cmdline())]
        if workers:
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append(workers[0].pid)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    result = ws.Sweep.from_string(text).run(tmp_path / "dask", executor="dask", workers=2,
                                            progress=False)
    killer.join()
    assert killed, "the worker was never killed"
    assert result.ok
    assert (load_status(tmp_path / "dask")["state"] == "done").all()
    same(load(local), load(tmp_path / "dask"))


def test_submitit_local_executor_matches_local(tmp_path):
    text = small_config(steps=30, every=10)
    ws.Sweep.from_string(text).run(tmp_path / "local", progress=False)
    extra = '\n[executor]\nkind = "submitit"\ncluster = "local"\ntime_min = 10\n'
    result = ws.Sweep.from_string(text + extra).run(tmp_path / "sub", progress=False)
    assert result.ok
    assert list((tmp_path / "sub" / "submitit").glob("*_log.out"))
    same(load(tmp_path / "local"), load(tmp_path / "sub"))


def test_tensorboard_tracker_writes_event_files(tmp_path):
    text = small_config(steps=10, every=5) + '\n[tracker]\nkind = "tensorboard"\n'
    ws.Sweep.from_string(text).run(tmp_path / "tb", progress=False)
    events = list((tmp_path / "tb" / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "loss/seed=0" in tags and len(acc.Scalars("loss/seed=0")) == 10
