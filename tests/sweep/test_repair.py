"""Whole sweeps over damaged folders: a full disk is one line and rerunning resumes to the
same numbers; a damaged status.json or sweep.toml does not stop the sweep; --force-new
keeps one writer; temp files of killed writers go away."""

import errno
import signal
import time
import warnings

import pytest
from sweep_helpers import assert_same_results, cli, small_config

import widthscan as ws
from widthscan.cli.main import main
from widthscan.store import RunStore, SweepLock, SweepLockedError, load, load_status, run_dir

PROBES = "\n[probes.loss]\n[probes.logits]\nn_log = 3\nn_linear = 2\n"
CONFIG = small_config(steps=40, every=10, extra=PROBES)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "sweep"
    ws.Sweep.from_string(CONFIG).run(out, progress=False)
    return load(out)


def fail_on_call(monkeypatch, owner, name, call: int):
    """Make ``owner.name`` raise ENOSPC on its ``call``-th call (1-based)."""
    real = getattr(owner, name)
    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device", "some/file")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, full)


@pytest.mark.parametrize("write,call", [("save_checkpoint", 2), ("append_scalars", 2),
                                        ("write_probe", 3)])
def test_disk_full_is_one_line_and_rerunning_resumes(tmp_path, monkeypatch, capsys, reference,
                                                     write, call):
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        fail_on_call(patch, RunStore, write, call)
        code = main(["run", str(config), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no space left" in err and "some/file" in err and "rerun the same command" in err
    assert "param=mup,width=32" in err
    if write == "save_checkpoint":
        (run_dir(out, "mup", 32) / "status.json").write_bytes(b'{"state": "runn')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(config), "-o", str(out), "--quiet"]) == 0
    assert (load_status(out)["state"] == "done").all()
    assert_same_results(reference, load(out))


def test_disk_full_writing_sweep_toml(tmp_path, monkeypatch, capsys):
    from widthscan.sweep import api

    fail_on_call(monkeypatch, api, "atomic_write_text", 1)
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG)
    assert main(["run", str(config), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no space left" in err


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00not utf-8", b"widths = [16,"])
def test_unreadable_sweep_toml_does_not_stop_run_report_or_force_new(tmp_path, capsys, garbage):
    config = tmp_path / "sweep.toml"
    config.write_text(small_config(steps=10, every=5))
    out = tmp_path / "out"
    assert main(["run", str(config), "-o", str(out), "--quiet"]) == 0
    (out / "sweep.toml").write_bytes(garbage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", str(out)]) == 0
        assert main(["run", str(config), "-o", str(out), "--quiet"]) == 0
    assert ws.config.load_config(out / "sweep.toml") == ws.config.load_config(config)

    (out / "sweep.toml").write_bytes(garbage)
    changed = tmp_path / "changed.toml"
    changed.write_text(small_config(steps=10, every=5, lr=0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(changed), "-o", str(out), "--quiet"]) == 2
        assert "optimizer.lr: 0.1 -> 0.3" in capsys.readouterr().err
        assert main(["run", str(changed), "-o", str(out), "--quiet", "--force-new"]) == 0
    assert ws.config.load_config(out / "sweep.toml").optimizer.lr == 0.3


def test_temp_files_left_by_a_kill_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    ws.Sweep.from_string(small_config(steps=10, every=5)).run(out, progress=False)
    litter = [out / ".sweep.toml.0a1b.tmp",
              run_dir(out, "mup", 16) / ".checkpoint.safetensors.2c3d.tmp",
              run_dir(out, "mup", 32) / ".scalars.parquet.4e5f.tmp"]
    for path in litter:
        path.write_bytes(b"partial")
    ws.Sweep.from_string(small_config(steps=10, every=5)).run(out, progress=False)
    assert not any(path.exists() for path in litter)


def test_force_new_keeps_the_lock_on_the_new_folder(tmp_path):
    """The old folder moves aside with its lock; the new one must be locked before the old
    lock is let go, or a second ``widthscan run`` is admitted next to the first."""
    out = tmp_path / "out"
    ws.Sweep.from_string(small_config(steps=10, every=5)).run(out, progress=False)
    config = tmp_path / "long.toml"
    config.write_text(small_config(steps=100_000, every=500, lr=0.05))
    first = cli("run", str(config), "-o", str(out), "--quiet", "--force-new")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (list(tmp_path.glob("out.old-*"))
                                              and (out / "runs").exists()):
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.1)
        assert (out / "runs").exists()
        with pytest.raises(SweepLockedError, match=str(first.pid)):
            SweepLock(out).acquire()
        aside = next(tmp_path.glob("out.old-*"))
        assert not (aside / "sweep.lock").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()


def test_scalars_are_synced_and_counted_before_each_checkpoint(tmp_path, monkeypatch):
    events = []
    real_sync, real_save = RunStore.sync_scalars, RunStore.save_checkpoint

    def sync(self):
        events.append(("sync", None))
        real_sync(self)

    def save(self, tensors, meta):
        on_disk = len(RunStore(self.path).read_scalars())
        events.append(("save", (meta["scalar_rows"], on_disk)))
        real_save(self, tensors, meta)

    monkeypatch.setattr(RunStore, "sync_scalars", sync)
    monkeypatch.setattr(RunStore, "save_checkpoint", save)
    ws.Sweep.from_string(small_config(steps=30, every=10)).run(tmp_path / "out", progress=False)
    saves = [i for i, (kind, _) in enumerate(events) if kind == "save"]
    assert len(saves) == 2 * 3
    for i in saves:
        assert events[i - 1][0] == "sync"
        recorded, on_disk = events[i][1]
        assert recorded == on_disk > 0
