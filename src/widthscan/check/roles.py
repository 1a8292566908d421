"""The parametrization table of a user's model, and mistakes visible in its structure.

Rows come from ``widthscan.parametrization.rule_table`` at the widest width. Two mistakes show
in the parameters themselves, before any forward pass: tensors shared under two names (weight
tying) and vectors stored as matrices (a (1, N) LayerNorm gain gets a matrix role).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from torch import nn

from widthscan.parametrization import rule_table
from widthscan.parametrization.roles import build_meta


@dataclass(frozen=True)
class RoleRow:
    """One parameter at the widest width: shape, role and its row of the rule table."""

    name: str
    shape: tuple[int, ...]
    role: str
    init_std: float | None
    multiplier: float
    lr_scale: float
    note: str = ""


@dataclass(frozen=True)
class Finding:
    """A structural mistake: ``kind`` ("tied" | "vector-as-matrix" | "readout-role" |
    "ignores-width"), the ``layers`` (module names) it concerns and a one-line ``message``."""

    kind: str
    layers: tuple[str, ...]
    message: str


def module_of(param_name: str) -> str:
    """``"a.b.weight"`` -> ``"a.b"``; a parameter of the root -> ``"(model)"``."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else "(model)"


def tied(net: nn.Module) -> list[tuple[str, ...]]:
    """Groups of parameter names that are one tensor (first name: the one the table keeps)."""
    groups: dict[int, list[str]] = {}
    for name, p in net.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [tuple(g) for g in groups.values() if len(g) > 1]


_MATRIX_LAYERS = (nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag, nn.Conv1d, nn.Conv2d,
                  nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def vectors_as_matrices(base: nn.Module, probe: nn.Module, skip: Iterable[str] = ()
                        ) -> list[tuple[str, tuple[int, ...]]]:
    """Parameters of >= 2 dims with exactly one dim that grows and every other dim of size 1,
    outside torch's matrix layers (a Linear(N, 1) readout is a matrix) and the modules
    ``skip``."""
    probe_p = dict(probe.named_parameters())
    skip = set(skip)
    skip |= {name or "(model)" for name, m in base.named_modules()
             if isinstance(m, _MATRIX_LAYERS)}
    out = []
    for name, p in base.named_parameters():
        if module_of(name) in skip:
            continue
        b, q = tuple(p.shape), tuple(probe_p[name].shape)
        grows = [i for i in range(len(b)) if b[i] != q[i]]
        if len(b) >= 2 and len(grows) == 1 and all(b[i] == 1 for i in range(len(b))
                                                   if i not in grows):
            out.append((name, q))
    return out


def structure(factory: Callable[[int], nn.Module], base_width: int,
              table: Mapping[str, RoleRow], readout: Iterable[str] = ()) -> list[Finding]:
    """Findings visible in the parameters: weight tying and vectors stored as matrices
    (outside the ``readout`` modules, whose matrix may have one output)."""
    base, probe = build_meta(factory, base_width), build_meta(factory, 2 * base_width)
    findings = []
    for group in tied(base):
        findings.append(Finding(
            "tied", tuple(module_of(n) for n in group),
            f"weight tying: {' and '.join(group)} are one tensor (e.g. embedding and readout); "
            f"the table gives it one role ('{table[group[0]].role}'), but muP needs an input "
            "role for the embedding and an output role (1/N multiplier) for the readout: "
            "untie them"))
    for name, shape in vectors_as_matrices(base, probe, readout):
        findings.append(Finding(
            "vector-as-matrix", (module_of(name),),
            f"a vector parameter (LayerNorm/bias) treated as a matrix: {name} has shape "
            f"{shape} and got role '{table[name].role}'; make it 1-d or pass "
            f"roles={{'{name}': 'vector'}}"))
    return findings


def stray_outputs(factory: Callable[[int], nn.Module], base_width: int,
                  table: Mapping[str, RoleRow], readout: Iterable[str],
                  skip: Iterable[str] = ()) -> list[Finding]:
    """Matrix parameters of role 'output' outside the readout and outside torch's matrix
    layers (a bare ``nn.Parameter`` such as a (seq_len, N) position table: its width dim sits
    where the table expects fan-in, so it gets the readout's 1/N multiplier)."""
    net = build_meta(factory, base_width)
    layers = {name or "(model)" for name, m in net.named_modules()
              if isinstance(m, _MATRIX_LAYERS)}
    skip = set(readout) | set(skip) | layers
    out = []
    for r in table.values():
        module = module_of(r.name)
        if r.role == "output" and len(r.shape) >= 2 and module not in skip:
            out.append(Finding(
                "stray-output", (module,),
                f"{r.name} {r.shape} got role 'output' (the readout's 1/N multiplier) but is "
                f"not in the readout: if it is a table added to width-sized activations (e.g. "
                f"positions) make it an nn.Embedding or pass roles={{'{r.name}': 'vector'}}"))
    return out


def annotate(table: Mapping[str, RoleRow], findings: Iterable[Finding]) -> dict[str, RoleRow]:
    """The table with each finding's kind added to the note of the parameters it concerns."""
    kinds: dict[str, list[str]] = {}
    for f in findings:
        for layer in f.layers:
            kinds.setdefault(layer, []).append(f.kind)
    out = {}
    for name, row in table.items():
        extra = ", ".join(dict.fromkeys(kinds.get(module_of(name), [])))
        note = "; ".join(n for n in (row.note, extra and f"check: {extra}") if n)
        out[name] = replace(row, note=note)
    return out


def roles_table(factory: Callable[[int], nn.Module], width: int, base_width: int, param: str,
                optimizer: str, roles: Mapping[str, str] | None = None) -> dict[str, RoleRow]:
    """name -> RoleRow for every parameter of ``factory(width)`` (shared tensors once)."""
    shapes, scales = rule_table(factory, width, base_width, param, optimizer, roles=roles)
    net = build_meta(factory, width)
    sizes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    aliases = {g[0]: g[1:] for g in tied(net)}
    rows = {}
    for name, shape in shapes.items():
        s = scales[name]
        note = f"tied: also {', '.join(aliases[name])}" if name in aliases else ""
        rows[name] = RoleRow(name, sizes[name], shape.role, s.init_std, s.multiplier,
                             s.lr_scale, note)
    return rows
