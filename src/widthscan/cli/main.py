"""widthscan: train one network family at many widths and seeds; see how consistent they are."""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from pathlib import Path

EXECUTOR_CHOICES = ("local", "dask", "submitit")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
ALLOW_IMPORT_HELP = ("let the config import and run code from MODULE (or a module inside "
                     "package MODULE), e.g. a model family 'MODULE:function'; repeatable. "
                     "Without it a config never imports anything")


def build_parser() -> argparse.ArgumentParser:
    from widthscan._version import __version__

    parser = argparse.ArgumentParser(prog="widthscan", description=__doc__)
    parser.add_argument("--version", action="version", version=f"widthscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the embedded default sweep end to end (~3 min CPU)")
    demo.add_argument("--out", default="widthscan-demo", help="output directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="run (or resume) a sweep from a TOML file")
    run.add_argument("config", help="sweep TOML file")
    run.add_argument("-o", "--out", required=True, help="sweep directory")
    run.add_argument("--executor", choices=EXECUTOR_CHOICES, help="override executor.kind")
    run.add_argument("--workers", type=int, help="override executor.workers")
    run.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://host:8786")
    run.add_argument("--wait", action="store_true", help="wait for another run's lock")
    run.add_argument("--force-new", action="store_true",
                     help="move a previous sweep with another config aside and start over")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                     help=ALLOW_IMPORT_HELP)

    status = sub.add_parser("status", help="table of runs: state, step, last loss, divergence")
    status.add_argument("dir", help="sweep directory")

    report = sub.add_parser("report", help="write DIR/report.html and DIR/figures/")
    report.add_argument("dir", help="sweep directory")
    report.add_argument("-o", "--out", help="HTML file to write (default DIR/report.html; "
                        "figures go next to it, in figures/)")

    rep = sub.add_parser("reproduce", help="the paper's experiments, with verdicts "
                         "(--list shows them)")
    rep.add_argument("name", nargs="?", help="experiment name, or 'all'")
    rep.add_argument("--list", action="store_true", help="list experiments, figures, costs")
    rep.add_argument("--scale", default="cpu", help="smoke, cpu (default), gpu or paper")
    rep.add_argument("-o", "--out", help="output directory (default reproduce-NAME-SCALE)")
    rep.add_argument("--executor", choices=EXECUTOR_CHOICES, help="override executor.kind")
    rep.add_argument("--workers", type=int, help="override executor.workers")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")

    config = sub.add_parser("config", help="print or check sweep configs")
    group = config.add_mutually_exclusive_group(required=True)
    group.add_argument("--example", action="store_true", help="print a commented example")
    group.add_argument("--check", metavar="FILE",
                       help="validate a sweep TOML file: fields, task, models at every width, "
                            "device, memory; lists what it would import")
    config.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                        help=ALLOW_IMPORT_HELP)
    _add_check(sub)
    return parser


def _add_check(sub) -> None:
    check = sub.add_parser(
        "check", help="is my own model width-consistent? roles, coordinate check, dynamics "
        "(exit 0: consistent, 1: not, 2: usage error)")
    check.add_argument("factory", help="pkg.mod:factory (a width -> nn.Module callable; naming "
                       "it here imports that module) or a built-in family (mlp, resnet18, "
                       "transformer)")
    check.add_argument("--base-width", type=int, required=True, help="width where all "
                       "parameterizations equal SP")
    check.add_argument("--widths", type=int, nargs="+", help="widths to check "
                       "(default 64 128 256 512 1024)")
    check.add_argument("--param", default="mup", help="mup | sp | ntp | mf (default mup)")
    check.add_argument("--optimizer", default="sgd", help="sgd | adam | adamw (default sgd)")
    check.add_argument("--lr", type=float, help="learning rate (default 0.1 SGD, 1e-3 Adam)")
    check.add_argument("--seeds", type=int, default=3, help="init seeds per width (default 3)")
    check.add_argument("--steps", type=int, default=3, help="coordinate-check steps (default 3)")
    check.add_argument("--dynamics-steps", type=int, default=10,
                       help="steps of the dynamics run, 0 skips it (default 10)")
    data = check.add_mutually_exclusive_group()
    data.add_argument("--task", help="built-in task to train on (default: one that matches "
                      "the model's input)")
    data.add_argument("--input-shape", type=int, nargs="+", metavar="N",
                      help="train on Gaussian inputs of this shape (one example, no batch)")
    check.add_argument("--tol", type=float, help="tolerated |slope - prediction| (default 0.35)")
    check.add_argument("-o", "--out", help="write OUT/check.html")


def _check(args) -> int:
    from widthscan.check import TOL, WIDTHS, UsageError, check
    from widthscan.check.page import write
    from widthscan.models import family

    try:
        factory = family(args.factory)
        result = check(factory, args.base_width, args.widths or WIDTHS, args.param,
                       args.optimizer, args.lr, range(args.seeds), args.steps,
                       args.dynamics_steps, args.task, args.input_shape,
                       tol=TOL if args.tol is None else args.tol, name=args.factory)
    except (UsageError, ValueError) as err:
        print(f"widthscan check: {err}", file=sys.stderr)
        return 2
    print(result.text())
    if args.out:
        print(f"page: {write(result, args.out)}")
    return 0 if result.ok else 1


def _run(config_text: str | None, config_path: str | None, out: str, args) -> int:
    from widthscan.sweep import Sweep

    allow = getattr(args, "allow_import", [])
    sweep = (Sweep.from_toml(config_path, allow) if config_path
             else Sweep.from_string(config_text, allow))
    result = sweep.run(out, executor=getattr(args, "executor", None),
                       workers=getattr(args, "workers", None),
                       scheduler=getattr(args, "scheduler", None),
                       wait=getattr(args, "wait", False),
                       force_new=getattr(args, "force_new", False),
                       progress=not args.quiet)
    _print_status(out)
    _print_final(out)
    if not result.ok:
        print(f"\n{len(result.failed)} run(s) failed: {', '.join(result.failed)} "
              f"(tracebacks in each run's error.txt)", file=sys.stderr)
        return 1
    return 0


def _print_status(out: str) -> None:
    from widthscan.sweep.status import status_table

    table = status_table(out)
    print(table.to_string(index=False) if len(table) else f"{out}: no runs yet")


def _print_final(out: str) -> None:
    import warnings

    from widthscan.analysis.summary import final_loss
    from widthscan.store import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load(out)
    if "loss" not in ds:
        return
    table = final_loss(ds)
    wide = table.assign(cell=[f"{m:.4g} ± {s:.2g}" for m, s in zip(table["loss"], table["std"])])
    print("\nfinal training loss (mean ± std over seeds, last 5% of steps):")
    print(wide.pivot(index="width", columns="param", values="cell").to_string())


class UsageError(Exception):
    """Bad input found before any work: printed as one line, exit status 2."""


def _sweep_dir(path: str) -> Path:
    """``path`` as an existing sweep directory (runs/ or sweep.toml), else UsageError."""
    d = Path(path)
    if not d.exists():
        raise UsageError(f"{path}: no such directory")
    if not d.is_dir():
        raise UsageError(f"{path}: not a directory")
    if not (d / "runs").is_dir() and not (d / "sweep.toml").is_file():
        raise UsageError(f"{path}: not a sweep directory (no runs/ and no sweep.toml; "
                         f"`widthscan run CONFIG -o {path}` makes one)")
    return d


def _report_path(sweep: Path, out: str | None) -> Path:
    """The HTML file to write: ``out`` (a folder means folder/report.html) or
    sweep/report.html; its folder must be creatable."""
    path = sweep / "report.html" if out is None else Path(out)
    if out is not None and (path.is_dir() or out.endswith(("/", "\\"))):
        path = path / "report.html"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"cannot write the report to {path}: {parent} is a file, "
                                 f"not a folder")
            break
    return path


def _report(out: str, html: str | None = None) -> int:
    from widthscan.report import report
    from widthscan.sweep.status import sweep_progress

    sweep = _sweep_dir(out)
    path = _report_path(sweep, html)
    if not any(run.losses for run in sweep_progress(sweep)):
        raise UsageError(f"{out}: no run has logged anything yet, so there is nothing to "
                         f"report (`widthscan status {out}` shows the runs)")
    path = report(out, path)
    print(f"report: {path}")
    return 0


def _reproduce(args) -> int:
    from widthscan.sweep import reproduce

    if args.list:
        print(reproduce.list_table())
        return 0
    if not args.name:
        print("widthscan reproduce: give an experiment name, 'all' or --list; experiments: "
              + ", ".join(reproduce.EXPERIMENTS), file=sys.stderr)
        return 2
    options = {"executor": args.executor, "workers": args.workers,
               "progress": False if args.quiet else None}
    if args.name == "all":
        reproduce.check_scale(args.scale)
        out = args.out or f"reproduce-all-{args.scale}"
        runs = reproduce.run_all(args.scale, out, **options)
        print(f"index: {Path(out) / 'index.html'}")
        return 1 if any(r.failed for r in runs) else 0
    run = reproduce.run_experiment(args.name, args.scale, args.out, **options)
    print(reproduce.verdict_table(run.results, f"{args.name} ({args.scale}, "
                                               f"{run.seconds:.0f} s)"))
    print(f"report: {run.out / 'report.html'}")
    if run.failed:
        print(f"{len(run.failed)} run(s) failed: {', '.join(run.failed)}", file=sys.stderr)
        return 1
    return 0


DEMO_NEXT = """
Open {path} in a browser.
Look first at the Verdict at the top: one sentence per parameterization says whether
its widths agree with the widest, and from which width on. Then "Pointwise predictions":
under μP the widths' logits fall onto one curve as width grows; under SP they drift."""


def _demo(args) -> int:
    from widthscan.sweep.demo import DEMO_TOML

    code = _run(DEMO_TOML, None, args.out, args)
    if code == 0:
        code = _report(args.out)
        print(DEMO_NEXT.format(path=Path(args.out) / "report.html"))
    return code


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: one line each, without the source line."""
    return f"widthscan: {category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    from widthscan.config import ConfigError
    from widthscan.store import SweepLockedError

    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "run":
            return _run(None, args.config, args.out, args)
        if args.command == "status":
            _sweep_dir(args.dir)
            _print_status(args.dir)
            return 0
        if args.command == "report":
            return _report(args.dir, args.out)
        if args.command == "check":
            return _check(args)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "config":
            from widthscan.config import EXAMPLE, load_config

            if args.example:
                print(EXAMPLE, end="")
            else:
                from widthscan.sweep import Sweep

                checked = Sweep(load_config(args.check, args.allow_import),
                                args.allow_import).check()
                print(f"{args.check}: valid")
                print("\n".join(f"  {line}" for line in checked.lines()))
            return 0
    except (ConfigError, SweepLockedError, UsageError) as err:
        print(f"widthscan: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        print(f"widthscan: {disk_full_message(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = ("; run the same command again to resume (finished runs are kept, the others "
                 "continue from their last checkpoint)" if args.command in ("demo", "run")
                 else "")
        print(f"\nwidthscan: interrupted{again}", file=sys.stderr)
        return 130
    return 2


def disk_full_message(err: OSError) -> str:
    """One line: what ran out, where, and that rerunning resumes."""
    what = "no space left on the device" if err.errno == errno.ENOSPC else "disk quota exceeded"
    where = f" writing {err.filename}" if err.filename else ""
    return (f"{what}{where} ({err.strerror or err}); free some space and rerun the same "
            "command: finished runs are kept and the others resume from their last checkpoint")


if __name__ == "__main__":
    sys.exit(main())
