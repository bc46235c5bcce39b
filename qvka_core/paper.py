"""The paper's reported results as data, the `paper-mini` reproduction grid, and its verdicts.

"QV May Be Enough" (arXiv 2603.15665), Tables 3-4: validation token accuracy (%) of a 3-layer
Transformer-BIG on WMT17 en-de. All numbers are [S]: reported by secondary summaries of the
paper (notes/paper.md §5.2); single runs, no variance reported.

`paper-mini` (notes/paper.md §8, scaled down to the bundled Austen corpus and the bundled
d128 decoder): {QKV (mha), QV} x {sinusoidal, AGF} + {QV-Ka d_ctx = d_h, QV-Ka d_ctx = 2·d_h}
x {AGF} (optionally also sinusoidal) x seeds, every run with the same budget.
`grid_runs` lists the runs, `grid_argvs` gives train command lines, `submit_grid` queues them
(one CPU job at a time), `run_grid_local` runs them in this process, `aggregate` turns
finished runs into mean ± sd per cell, and `claims` says whether our runs support each of the
paper's three claims, with the seed noise.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Any

from qvka_core import stats
from qvka_core.errors import RunError
from qvka_core.train.flags import to_argv

SOURCE = ("[S] reported by secondary summaries of arXiv 2603.15665 (Tables 3-4); "
          "single runs, no variance reported")

PAPER_TABLES: list[dict[str, Any]] = [
    {"table": 3, "mode": "QV", "cell": "qv", "position": "sinusoidal", "valid_acc": 70.0756},
    {"table": 3, "mode": "QKV", "cell": "qkv", "position": "sinusoidal", "valid_acc": 70.5911},
    {"table": 3, "mode": "QV", "cell": "qv", "position": "agf", "valid_acc": 70.5188},
    {"table": 3, "mode": "QKV", "cell": "qkv", "position": "agf", "valid_acc": 70.7305},
    {"table": 4, "mode": "QV-Ka, d_ctx = d_head", "cell": "qvka1x", "position": "agf",
     "valid_acc": 70.4998},
    {"table": 4, "mode": "QV-Ka, d_ctx = 2·d_head", "cell": "qvka2x", "position": "agf",
     "valid_acc": 70.6919},
]
"""Paper positions: "sinusoidal" = the paper's "Default"; "agf" = "AGF + PCM-V"."""

GRID_NAME = "paper-mini"
N_HEADS = 16  # the paper's 16 heads: d_h / d_model = 8 / 128 = 64 / 1024
HEAD_DIM = 8
CELLS: dict[str, dict[str, Any]] = {
    "qkv": {"label": "QKV (mha)", "variant": "mha", "d_ctx": None},
    "qv": {"label": "QV", "variant": "qv", "d_ctx": None},
    "qvka1x": {"label": "QV-Ka d_ctx = d_h", "variant": "qvka", "d_ctx": HEAD_DIM},
    "qvka2x": {"label": "QV-Ka d_ctx = 2·d_h", "variant": "qvka", "d_ctx": 2 * HEAD_DIM},
}
POSITIONS = {"sin": "sinusoidal", "agf": "agf"}
SEEDS = (0, 1, 2, 3, 4)
BUDGET: dict[str, int | float] = {
    "steps": 1500, "batch": 16, "seq_len": 128, "lr": 3e-3, "eval_batches": 8,
}
"""Equal budget for every cell: 1,500 steps x 16 x 128 = 3.07 M tokens per run (about three
passes over the 1.0 M-token train split). Measured first on this 2-core machine: one run
trains at ~20 k tokens/s on idle cores (two runs side by side at 1 thread each, ~10 k each),
so a run takes ~5 min idle and the paper's 6 cells x 5 seeds (92 M tokens) ~80 min with two
runs at a time; with other work on the machine, 2-3x that. A 400-step probe (0.8 M tokens)
ended at 5.32 nats for QV under sinusoidal PE and 800 steps at ~4.7, above the bigram's
4.62: fewer tokens leave the slowest cell at the bigram. Evaluation (10 points for the
learning curves, on eval_batches x batch = 128 fixed windows of 128 tokens) and checkpoints
(5 per run) scale with the steps."""
EVAL_POINTS, CHECKPOINTS, LOG_POINTS = 10, 5, 30
MARGIN_NATS = 0.02
"""Equivalence margin for "close to QKV" (claim 3): 0.02 nats/token, i.e. 2 % perplexity.
arXiv 2606.04032 measures plain QV (their Q-K=V) at 2.5-3.1 % perplexity behind QKV at
300 M-1.2 B parameters, so a key-side scheme "close to QKV" must be nearer than plain QV's
known cost; 2 % sits just inside it."""


def key_side_share(d_ctx: int, *, d_model: int = 128, n_heads: int = N_HEADS) -> float:
    """QV-Ka's key-side parameters (W_ctx + the per-head W_K,i) as a share of MHA's W_K, from
    the built configs' own accounting (notes/paper.md §6: 19 % and 31 % in the paper)."""
    from qvka_core.accounting import param_breakdown
    from qvka_core.train.bundled import austen_config

    base = austen_config().with_attention(n_heads=n_heads, head_dim=None, n_kv_heads=None)
    mha = param_breakdown(base)["attention/k_proj"]
    ka = param_breakdown(base.with_variant("qvka", d_ctx=d_ctx))
    return (ka["attention/ctx_proj"] + ka["attention/k_weight"]) / mha


def grid_runs(*, seeds: tuple[int, ...] | list[int] = SEEDS, cells: list[str] | None = None,
              positions: list[str] | None = None, steps_mult: float = 1.0,
              budget: dict[str, int | float] | None = None, qvka_both: bool = False,
              prefix: str = GRID_NAME) -> list[dict[str, Any]]:
    """Every run of the grid: [{"name", "cell", "position", "seed", "train", "argv"}, ...].

    QV-Ka cells run under AGF only, as in the paper (6 cells x 5 seeds = 30 runs); with
    `qvka_both` they also run under sinusoidal PE (8 cells, 40 runs). Every cell has the
    bundled d128 decoder with 16 heads of 8 and √d-scaled embeddings under both position
    schemes, so a cell differs from another only in attention and positions; seed s fixes
    the data order (and the shared parts of the initialisation) in every cell, so cells
    pair by seed. `train` holds the TrainArgs fields without out/name/device, `argv` the same
    as train options (for command lines). Order:
    seed-major, so a partial grid already covers every cell once.
    """
    cells = list(cells or CELLS)
    positions = list(positions or POSITIONS)
    unknown = [c for c in cells if c not in CELLS] + [p for p in positions if p not in POSITIONS]
    if unknown:
        raise RunError(f"unknown grid cell/position {unknown}; cells: {', '.join(CELLS)}; "
                       f"positions: {', '.join(POSITIONS)}")
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise RunError(f"seeds must be one or more integers >= 0, got {list(seeds)!r}")
    if not (isinstance(steps_mult, int | float) and math.isfinite(steps_mult)
            and steps_mult > 0):
        raise RunError(f"steps_mult must be a positive number, got {steps_mult!r}")
    b = {**BUDGET, **(budget or {})}
    steps = max(1, round(int(b["steps"]) * steps_mult))
    every = {"eval_every": max(1, steps // EVAL_POINTS),
             "checkpoint_every": max(1, steps // CHECKPOINTS),
             "log_every": max(1, steps // LOG_POINTS)}
    runs = []
    for seed in seeds:
        for cell in cells:
            for pos in positions:
                if cell.startswith("qvka") and pos != "agf" and not qvka_both:
                    continue
                spec = CELLS[cell]
                train: dict[str, Any] = {
                    "preset": "austen", "n_heads": N_HEADS, "embed_scale": True,
                    "variant": spec["variant"], "position": POSITIONS[pos], "data": "austen",
                    "seed": seed, "steps": steps, "warmup": max(1, steps // 10),
                    **{key: b[key] for key in ("batch", "seq_len", "lr", "eval_batches")},
                    **every}
                if spec["d_ctx"] is not None:
                    train["d_ctx"] = spec["d_ctx"]
                runs.append({"name": f"{prefix}-{cell}-{pos}-s{seed}", "cell": cell,
                             "position": POSITIONS[pos], "seed": seed, "train": train,
                             "argv": to_argv(train)})
    if not runs:
        raise RunError("the grid selection is empty (QV-Ka runs under AGF unless qvka_both)")
    return runs


def grid_argvs(out: str = "runs", **kwargs: Any) -> list[list[str]]:
    """Full `python -m qvka_core train` option lists (with --out/--name) for `train --grid`."""
    return [r["argv"] + ["--out", out, "--name", r["name"]] for r in grid_runs(**kwargs)]


def submit_grid(*, root: str | Path | None = None, device: str = "cpu",
                trainer: list[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Queue every grid run (one job per slot: sequential on the CPU). Returns their statuses.

    `trainer` replaces `python -m qvka_core train` (tests); kwargs go to `grid_runs`.
    """
    from qvka_core import jobs

    return [jobs.submit(r["train"], name=r["name"], device=device, root=root, trainer=trainer,
                        tags={"grid": GRID_NAME, "cell": r["cell"], "position": r["position"],
                              "seed": r["seed"]})
            for r in grid_runs(**kwargs)]


def run_grid_local(out: str | Path = "runs", *, device: str = "cpu",
                   shard: tuple[int, int] = (0, 1), threads: int | None = None,
                   **kwargs: Any) -> list[dict[str, Any]]:
    """Run the grid here, one run after another (scripted use), resumably: finished runs are
    skipped and a run that was interrupted continues from its last checkpoint. `shard`
    (i, n) takes every n-th run from the i-th, so n processes can share the grid."""
    from qvka_core.train import run
    from qvka_core.train.flags import args_from_fields

    index, count = shard
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int)
            and 0 <= index < count):
        raise RunError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
    done = []
    for r in grid_runs(**kwargs)[index::count]:
        run_dir = Path(out) / r["name"]
        if _final(run_dir) is not None:
            continue
        fields = {**r["train"], "out": str(out), "name": r["name"], "device": device,
                  "resume": (run_dir / "config.json").exists()}
        if threads is not None:
            fields["threads"] = threads
        result = run(args_from_fields(fields))
        done.append({"name": r["name"], "state": result.state, "val_loss": result.val_loss,
                     "val_acc": result.val_acc})
    return done


# --- aggregation ------------------------------------------------------------------------------
def _final(run_dir: Path) -> dict[str, Any] | None:
    """A completed run's final validation metrics, baselines, learning curve and speed."""
    from qvka_core.jobs.status import read_metrics
    from qvka_core.jobs.store import read_json

    status = read_json(run_dir / "status.json") or {}
    if status.get("state") != "completed":
        return None
    records = read_metrics(run_dir)
    evals = [r for r in records if r.get("val_loss") is not None]
    if not evals or evals[-1].get("val_acc") is None:
        return None
    last = evals[-1]
    first = records[0] if records else {}
    meta = read_json(run_dir / "checkpoint" / "meta.json") or {}
    speeds = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]

    def baseline(key: str) -> float | None:
        value = first.get(key, meta.get(key))
        return None if value is None else float(value)

    return {"val_loss": float(last["val_loss"]), "val_acc": float(last["val_acc"]),
            "step": last["step"], "tokens": last.get("tokens"),
            "unigram_loss": baseline("unigram_loss"), "bigram_loss": baseline("bigram_loss"),
            "wall_s": last.get("elapsed_s"),
            "tokens_per_s": statistics.median(speeds) if speeds else None,
            "curve": [[r.get("tokens", 0), float(r["val_loss"])] for r in evals]}


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def _curve(runs: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean, min and max validation loss over seeds at each evaluation all runs share."""
    by_tokens: dict[int, list[float]] = {}
    for r in runs:
        for tokens, loss in r["curve"]:
            by_tokens.setdefault(int(tokens), []).append(loss)
    return [{"tokens": t, "mean": statistics.fmean(v), "min": min(v), "max": max(v)}
            for t, v in sorted(by_tokens.items()) if len(v) == len(runs)]


def aggregate(root: str | Path = "runs", *, prefix: str = GRID_NAME) -> dict[str, Any]:
    """Per grid cell: its runs by seed, mean ± sd (sample, n-1) of final val_loss (nats) and
    val_acc (%), the unigram and bigram baselines on the same windows, the learning curve.

    Only completed runs named `<prefix>-<cell>-<sin|agf>-s<seed>` count; others are listed
    under "incomplete".
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-({'|'.join(CELLS)})-({'|'.join(POSITIONS)})"
                         r"-s(\d+)$")
    cells: dict[str, dict[str, Any]] = {}
    incomplete = []
    base = Path(root)
    for run_dir in sorted(base.iterdir()) if base.is_dir() else []:
        m = pattern.match(run_dir.name)
        if not m:
            continue
        final = _final(run_dir)
        if final is None:
            incomplete.append(run_dir.name)
            continue
        cell, pos, seed = m.group(1), POSITIONS[m.group(2)], int(m.group(3))
        entry = cells.setdefault(f"{cell}/{pos}", {"cell": cell, "label": CELLS[cell]["label"],
                                                   "position": pos, "runs": []})
        entry["runs"].append({"name": run_dir.name, "seed": seed, **final})
    for entry in cells.values():
        runs = sorted(entry["runs"], key=lambda r: r["seed"])
        entry["runs"] = runs
        entry["n"] = len(runs)
        entry["seeds"] = [r["seed"] for r in runs]
        loss_m, loss_sd = _mean_sd([r["val_loss"] for r in runs])
        acc_m, acc_sd = _mean_sd([100.0 * r["val_acc"] for r in runs])
        entry.update(val_loss_mean=loss_m, val_loss_sd=loss_sd, val_acc_mean=acc_m,
                     val_acc_sd=acc_sd, unigram_loss=_mean_of(runs, "unigram_loss"),
                     bigram_loss=_mean_of(runs, "bigram_loss"),
                     tokens_per_s=_mean_of(runs, "tokens_per_s"),
                     wall_s=_mean_of(runs, "wall_s"), curve=_curve(runs))
    return {"grid": prefix, "cells": dict(sorted(cells.items())), "incomplete": incomplete,
            "budget": BUDGET, "margin_nats": MARGIN_NATS,
            "units": {"val_loss": "nats/token", "val_acc": "% next-token"}}


# --- claims -----------------------------------------------------------------------------------
CLAIMS = [(1, "QV is slightly behind QKV (sinusoidal PE)", "70.0756 vs 70.5911 % (−0.516 points)"),
          (2, "AGF shrinks the QV–QKV gap by about half",
           "gap −0.516 → −0.212 points (≈59 % smaller)"),
          (3, "QV-Ka with d_ctx = 2·d_h is close to QKV (AGF)",
           "70.6919 vs 70.7305 % (−0.039 points)")]
COMPARISONS = {  # name -> (cell a, cell b): paired loss differences a − b, by seed
    "qv_sin": ("qv/sinusoidal", "qkv/sinusoidal"),
    "qv_agf": ("qv/agf", "qkv/agf"),
    "qvka2x_agf": ("qvka2x/agf", "qkv/agf"),
    "qvka1x_agf": ("qvka1x/agf", "qkv/agf"),
    "qkv_agf_vs_sin": ("qkv/agf", "qkv/sinusoidal"),
}
UNRESOLVED = "not resolved at this scale"


def _by_seed(results: dict[str, Any], key: str, metric: str = "val_loss") -> dict[int, float]:
    cell = results["cells"].get(key)
    return {r["seed"]: r[metric] for r in cell["runs"]} if cell else {}


def paired_difference(results: dict[str, Any], a: str, b: str,
                      metric: str = "val_loss") -> stats.Paired | None:
    """Mean over shared seeds of metric(a) − metric(b), with its t intervals."""
    xa, xb = _by_seed(results, a, metric), _by_seed(results, b, metric)
    return stats.paired([xa[s] - xb[s] for s in sorted(set(xa) & set(xb))])


def _gap_change(results: dict[str, Any]) -> stats.Paired | None:
    """Per seed: (QV − QKV under sinusoidal) − (QV − QKV under AGF), the gap AGF removes."""
    cols = [_by_seed(results, k) for k in ("qv/sinusoidal", "qkv/sinusoidal", "qv/agf",
                                           "qkv/agf")]
    seeds = sorted(set.intersection(*(set(c) for c in cols)))
    return stats.paired([(cols[0][s] - cols[1][s]) - (cols[2][s] - cols[3][s]) for s in seeds])


def _ci(p: stats.Paired) -> str:
    return f"{p.mean:+.3f} nats (95 % CI {p.lo:+.3f}..{p.hi:+.3f}, n = {p.n} seeds)"


def _untrained(results: dict[str, Any]) -> str | None:
    """Why the runs cannot test a claim: some cell does not beat the bigram baseline on its
    own windows, i.e. it has not learned even which word follows which."""
    behind = [f"{key} {c['val_loss_mean']:.3f} ≥ {c['bigram_loss']:.3f}"
              if c.get("bigram_loss") is not None else f"{key} (no bigram recorded)"
              for key, c in results.get("cells", {}).items()
              if c.get("bigram_loss") is None or c["val_loss_mean"] >= c["bigram_loss"]]
    if not behind:
        return None
    return ("cells not below the bigram baseline (or without one), so not trained enough to "
            "compare (val loss ≥ bigram loss, nats): " + "; ".join(behind))


def claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """For each of the paper's three claims: the paired difference across seeds with its
    95 % t interval, and a verdict decided by that interval (claim 3: by an equivalence test
    against MARGIN_NATS). Verdicts: "supported", "contradicted", "not resolved at this scale"
    (the interval is compatible with both), "insufficient data" (< 2 paired seeds),
    "insufficient training" (some cell is not below its bigram baseline)."""
    out = []

    def record(cid: int, p: stats.Paired | None, verdict: str, detail: str,
               key: str = "difference") -> None:
        _, claim, paper_text = CLAIMS[cid - 1]
        numbers = {key: p.mean, "paired": p.to_dict()} if p is not None else {}
        out.append({"id": cid, "claim": claim, "paper": paper_text, "metric": "val_loss",
                    **numbers, "verdict": verdict, "text": f"{detail}; {verdict}"})

    untrained = _untrained(results)
    if untrained:  # differences between models that learned nothing say nothing
        for cid, _, _ in CLAIMS:
            record(cid, None, "insufficient training", untrained)
        return out
    qv_sin = paired_difference(results, *COMPARISONS["qv_sin"])
    if qv_sin is None:
        record(1, None, "insufficient data", "needs ≥ 2 shared seeds of QV and QKV, sinusoidal")
    else:
        v = {1: "supported: QV is behind QKV", -1: "contradicted: QV is ahead of QKV",
             0: UNRESOLVED}[stats.direction(qv_sin)]
        record(1, qv_sin, v, f"QV − QKV: {_ci(qv_sin)}")

    change = _gap_change(results)
    qv_agf = paired_difference(results, *COMPARISONS["qv_agf"])
    if change is None or qv_sin is None or qv_agf is None:
        record(2, None, "insufficient data", "needs ≥ 2 shared seeds of QV and QKV under both")
    else:
        detail = (f"gap under sinusoidal {_ci(qv_sin)}, under AGF {_ci(qv_agf)}; AGF removes "
                  f"{_ci(change)}")
        if stats.direction(qv_sin) != 1:
            v = f"{UNRESOLVED}: no QV–QKV gap beyond noise under sinusoidal PE to shrink"
        elif stats.direction(change) == 1:
            frac = change.mean / qv_sin.mean
            v = f"supported: AGF shrinks the gap, by {frac:.0%} (the paper: ≈59 %)"
        elif stats.direction(change) == -1:
            v = "contradicted: the gap grows under AGF"
        else:
            v = UNRESOLVED
        record(2, change, v, detail, key="gap_reduction")

    ka = paired_difference(results, *COMPARISONS["qvka2x_agf"])
    if ka is None:
        record(3, None, "insufficient data", "needs ≥ 2 shared seeds of QV-Ka(2×) and QKV, AGF")
    else:
        m = MARGIN_NATS
        test = stats.equivalence(ka, m)
        v = {"equivalent": f"supported: within ±{m} nats of QKV (90 % CI "
                           f"{ka.lo90:+.3f}..{ka.hi90:+.3f})",
             "different": f"contradicted: {'behind' if ka.mean > 0 else 'ahead of'} QKV by "
                          f"more than {m} nats",
             "unresolved": f"{UNRESOLVED} (margin ±{m} nats)"}[test]
        record(3, ka, v, f"QV-Ka(2×) − QKV: {_ci(ka)}")
    return out


def comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every paired comparison of COMPARISONS that the runs allow, loss and accuracy."""
    rows = []
    for name, (a, b) in COMPARISONS.items():
        p = paired_difference(results, a, b)
        if p is None:
            continue
        acc = paired_difference(results, a, b, "val_acc")
        rows.append({"name": name, "a": a, "b": b, "loss": p.to_dict(),
                     "acc_points": None if acc is None else 100 * acc.mean})
    return rows


def summary_text(data: dict[str, Any]) -> str:
    """A `summary` as lines: mean ± sd per cell (accuracy in %), then each claim's verdict."""
    def sd(v: float | None) -> str:
        return f"{v:.3f}" if v is not None else "-"

    lines = []
    for key, c in data.get("cells", {}).items():
        base = (f"  bigram {c['bigram_loss']:.3f}" if c.get("bigram_loss") is not None else "")
        lines.append(f"{key:<22} n={c['n']}  val_loss {c['val_loss_mean']:.4f} ± "
                     f"{sd(c['val_loss_sd'])}  val_acc {c['val_acc_mean']:.2f} ± "
                     f"{sd(c['val_acc_sd'])} %{base}")
    if data.get("incomplete"):
        lines.append(f"incomplete: {', '.join(data['incomplete'])}")
    lines += [f"({c['id']}) {c['claim']} [paper: {c['paper']}]\n    {c['text']}"
              for c in data.get("claims", [])]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    import os
    import platform

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def summary(root: str | Path = "runs", *, prefix: str = GRID_NAME, command: str | None = None,
            out: str | Path | None = None) -> dict[str, Any]:
    """aggregate + claims + comparisons + the paper's tables, the producing command, the
    machine and the grid's wall time; optionally saved atomically to `out`."""
    results = aggregate(root, prefix=prefix)
    walls = [r["wall_s"] for c in results["cells"].values() for r in c["runs"]
             if r.get("wall_s") is not None]
    data = {**results, "claims": claims(results), "comparisons": comparisons(results),
            "design": {"n_heads": N_HEADS, "head_dim": HEAD_DIM, "embed_scale": True,
                       "key_side_share": {c: key_side_share(CELLS[c]["d_ctx"])
                                          for c in ("qvka1x", "qvka2x")}},
            "paper": PAPER_TABLES, "paper_source": SOURCE, "command": command,
            "machine": machine(), "train_wall_s_total": sum(walls) if walls else None}
    if out is not None:
        from qvka_core.jobs.store import atomic_write_json

        target = Path(out)
        if target.is_dir():
            raise RunError(f"--out {target} is a directory; give a file path")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(target, data)
    return data
