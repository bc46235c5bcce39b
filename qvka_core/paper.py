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

from qvka_core.errors import RunError

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
HEAD_DIM = 32  # the bundled Austen decoder: d_model 128, 4 heads
CELLS: dict[str, dict[str, Any]] = {
    "qkv": {"label": "QKV (mha)", "variant": "mha", "d_ctx": None},
    "qv": {"label": "QV", "variant": "qv", "d_ctx": None},
    "qvka1x": {"label": "QV-Ka d_ctx = d_h", "variant": "qvka", "d_ctx": HEAD_DIM},
    "qvka2x": {"label": "QV-Ka d_ctx = 2·d_h", "variant": "qvka", "d_ctx": 2 * HEAD_DIM},
}
POSITIONS = {"sin": "sinusoidal", "agf": "agf"}
SEEDS = (0, 1, 2)
BUDGET: dict[str, int | float] = {
    "steps": 150, "batch": 16, "seq_len": 64, "lr": 2e-3, "warmup": 15, "eval_every": 50,
    "eval_batches": 4, "log_every": 10, "checkpoint_every": 50,
}
"""Equal budget for every cell: 150 x 16 x 64 = 153,600 tokens per run. Sized for 2 idle CPU
cores: ~40 s per run (start-up included), 18 runs ≈ 12 min (24 with `qvka_both` ≈ 16 min).
GPU users pass `steps_mult` (and may raise batch through `budget`)."""


def grid_runs(*, seeds: tuple[int, ...] | list[int] = SEEDS, cells: list[str] | None = None,
              positions: list[str] | None = None, steps_mult: float = 1.0,
              budget: dict[str, int | float] | None = None, qvka_both: bool = False,
              prefix: str = GRID_NAME) -> list[dict[str, Any]]:
    """Every run of the grid: [{"name", "cell", "position", "seed", "argv"}, ...].

    QV-Ka cells run under AGF only, as in the paper (6 cells x 3 seeds = 18 runs); with
    `qvka_both` they also run under sinusoidal PE (8 cells, 24 runs). `argv` holds the train
    options without --out/--name/--device (the queue or the caller adds those). Order:
    seed-major, so a partial grid already covers every cell once.
    """
    cells = list(cells or CELLS)
    positions = list(positions or POSITIONS)
    unknown = [c for c in cells if c not in CELLS] + [p for p in positions if p not in POSITIONS]
    if unknown:
        raise RunError(f"unknown grid cell/position {unknown}; cells: {', '.join(CELLS)}; "
                       f"positions: {', '.join(POSITIONS)}")
    if not seeds:
        raise RunError("the grid needs at least one seed (use >= 3 for mean ± sd)")
    b = {**BUDGET, **(budget or {})}
    steps = max(1, round(int(b["steps"]) * steps_mult))
    runs = []
    for seed in seeds:
        for cell in cells:
            for pos in positions:
                if cell.startswith("qvka") and pos != "agf" and not qvka_both:
                    continue
                spec = CELLS[cell]
                argv = ["--preset", "austen", "--variant", spec["variant"],
                        "--position", POSITIONS[pos], "--data", "austen", "--seed", str(seed),
                        "--steps", str(steps), "--warmup", str(min(int(b["warmup"]), steps))]
                for key in ("batch", "seq_len", "lr", "eval_every", "eval_batches",
                            "log_every", "checkpoint_every"):
                    argv += [f"--{key.replace('_', '-')}", str(b[key])]
                if spec["d_ctx"] is not None:
                    argv += ["--d-ctx", str(spec["d_ctx"])]
                runs.append({"name": f"{prefix}-{cell}-{pos}-s{seed}", "cell": cell,
                             "position": POSITIONS[pos], "seed": seed, "argv": argv})
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

    return [jobs.submit(r["argv"], name=r["name"], device=device, root=root, trainer=trainer,
                        tags={"grid": GRID_NAME, "cell": r["cell"], "position": r["position"],
                              "seed": r["seed"]})
            for r in grid_runs(**kwargs)]


def run_grid_local(out: str | Path = "runs", *, device: str = "cpu",
                   **kwargs: Any) -> list[dict[str, Any]]:
    """Run the grid here, one run after another (scripted use). Finished runs are skipped."""
    from qvka_core.cli import _Parser
    from qvka_core.cli import train as train_cli
    from qvka_core.train import run

    parser = _Parser(prog="train")
    train_cli.add_arguments(parser)
    done = []
    for r in grid_runs(**kwargs):
        run_dir = Path(out) / r["name"]
        if _final(run_dir) is not None:
            continue
        ns = parser.parse_args(r["argv"] + ["--out", str(out), "--name", r["name"],
                                            "--device", device])
        result = run(train_cli.build_args(ns))
        done.append({"name": r["name"], "state": result.state, "val_loss": result.val_loss,
                     "val_acc": result.val_acc})
    return done


# --- aggregation ------------------------------------------------------------------------------
def _final(run_dir: Path) -> dict[str, float] | None:
    """Final validation loss/accuracy of a completed run, else None."""
    from qvka_core.jobs.status import read_metrics
    from qvka_core.jobs.store import read_json

    status = read_json(run_dir / "status.json") or {}
    if status.get("state") != "completed":
        return None
    for rec in reversed(read_metrics(run_dir)):
        if rec.get("val_loss") is not None and rec.get("val_acc") is not None:
            meta = read_json(run_dir / "checkpoint" / "meta.json") or {}
            unigram = rec.get("unigram_loss", meta.get("unigram_loss"))
            return {"val_loss": float(rec["val_loss"]), "val_acc": float(rec["val_acc"]),
                    "step": rec["step"], "unigram_loss": None if unigram is None
                    else float(unigram)}
    return None


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(root: str | Path = "runs", *, prefix: str = GRID_NAME) -> dict[str, Any]:
    """Mean ± sd (sample, n-1) of final val_loss (nats) and val_acc (%) per grid cell.

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
        entry["n"] = len(entry["runs"])
        entry["seeds"] = sorted(r["seed"] for r in entry["runs"])
        loss_m, loss_sd = _mean_sd([r["val_loss"] for r in entry["runs"]])
        acc_m, acc_sd = _mean_sd([100.0 * r["val_acc"] for r in entry["runs"]])
        unigrams = [r["unigram_loss"] for r in entry["runs"] if r.get("unigram_loss") is not None]
        entry.update(val_loss_mean=loss_m, val_loss_sd=loss_sd, val_acc_mean=acc_m,
                     val_acc_sd=acc_sd,
                     unigram_loss=statistics.fmean(unigrams) if unigrams else None)
    return {"grid": prefix, "cells": dict(sorted(cells.items())), "incomplete": incomplete,
            "budget": BUDGET, "units": {"val_loss": "nats/token", "val_acc": "% next-token"}}


# --- claims -----------------------------------------------------------------------------------
def _diff(results: dict[str, Any], worse: str, better: str,
          metric: str) -> tuple[float, float | None, int] | None:
    """(mean(worse) − mean(better) as a deficit of `worse`, its standard error, min n)."""
    a, b = results["cells"].get(worse), results["cells"].get(better)
    if not a or not b:
        return None
    sign = 1.0 if metric == "val_loss" else -1.0  # deficit > 0 means `worse` is worse
    d = sign * (a[f"{metric}_mean"] - b[f"{metric}_mean"])
    sds = (a[f"{metric}_sd"], b[f"{metric}_sd"])
    if None in sds:
        return d, None, min(a["n"], b["n"])
    se = math.sqrt(sds[0] ** 2 / a["n"] + sds[1] ** 2 / b["n"])
    return d, se, min(a["n"], b["n"])


def _fmt(d: tuple[float, float | None, int], metric: str) -> str:
    unit = "nats" if metric == "val_loss" else "acc points"
    shown = d[0] if metric == "val_loss" else -d[0]  # as "A − B" in the metric's own sign
    noise = f" ± {d[1]:.3f}" if d[1] is not None else " (noise unknown: 1 seed)"
    return f"{shown:+.3f}{noise} {unit} (n={d[2]})"


def _beyond(d: tuple[float, float | None, int]) -> int:
    """+1 deficit beyond 2 s.e., −1 advantage beyond 2 s.e., 0 within noise."""
    if d[1] is None:
        return 0
    return 1 if d[0] > 2 * d[1] else (-1 if d[0] < -2 * d[1] else 0)


CLAIMS = [(1, "QV is slightly behind QKV (sinusoidal PE)", "70.0756 vs 70.5911 % (−0.516 points)"),
          (2, "AGF shrinks the QV–QKV gap by about half",
           "gap −0.516 → −0.212 points (≈59 % smaller)"),
          (3, "QV-Ka with d_ctx = 2·d_h is close to QKV (AGF)",
           "70.6919 vs 70.7305 % (−0.039 points)")]


def _untrained(results: dict[str, Any]) -> str | None:
    """Why the runs cannot test a claim: some cell does not beat the unigram baseline (a model
    that predicts word frequencies only), i.e. the budget was too small to learn anything."""
    behind = [f"{key} {c['val_loss_mean']:.3f} ≥ {c['unigram_loss']:.3f}"
              for key, c in results.get("cells", {}).items()
              if c.get("unigram_loss") is not None and c["val_loss_mean"] >= c["unigram_loss"]]
    if not behind:
        return None
    return ("not beyond the unigram baseline, so not trained enough to compare (val loss ≥ "
            "unigram loss, nats): " + "; ".join(behind))


def claims(results: dict[str, Any], *, metric: str = "val_loss") -> list[dict[str, Any]]:
    """For each of the paper's claims: our numbers, the seed noise and a plain verdict.

    `metric` decides the verdict ("val_loss" or "val_acc"); the other one is shown too.
    "Beyond noise" means |difference| > 2 standard errors of the difference of means.
    Verdicts: supported, partly supported, not shown (the paper's direction, within noise),
    not supported, contradicted, insufficient data, insufficient training (a cell does not
    beat the unigram baseline).
    """
    if metric not in ("val_loss", "val_acc"):
        raise RunError(f"metric must be val_loss or val_acc, got {metric!r}")
    other = "val_acc" if metric == "val_loss" else "val_loss"
    out = []

    def record(cid: int, claim: str, paper: str, d: Any, verdict: str, detail: str,
               key: str = "difference") -> None:
        """d = (deficit, se, n); "difference" is shown as A − B in the metric's own sign."""
        numbers: dict[str, Any] = {}
        if d is not None:
            value = d[0] if metric == "val_loss" or key != "difference" else -d[0]
            numbers = {key: value, "se": d[1], "n": d[2]}
        out.append({"id": cid, "claim": claim, "paper": paper, "metric": metric, **numbers,
                    "verdict": verdict, "text": f"{detail}; {verdict}"})

    untrained = _untrained(results)
    if untrained:  # differences between models that learned nothing say nothing
        for cid, claim, paper_text in CLAIMS:
            record(cid, claim, paper_text, None, "insufficient training", untrained)
        return out
    qv_sin = _diff(results, "qv/sinusoidal", "qkv/sinusoidal", metric)
    qv_agf = _diff(results, "qv/agf", "qkv/agf", metric)
    _, c1, p1 = CLAIMS[0]
    if qv_sin is None or qv_sin[1] is None:
        record(1, c1, p1, qv_sin, "insufficient data", "needs ≥2 seeds of QV and QKV, sinusoidal")
    else:
        o = _diff(results, "qv/sinusoidal", "qkv/sinusoidal", other)
        detail = f"QV − QKV: {_fmt(qv_sin, metric)}; {other} {_fmt(o, other) if o else '-'}"
        within = ("not shown: QV is behind, as in the paper, but within noise" if qv_sin[0] > 0
                  else "not supported: QV is not behind; within noise")
        v = {1: "supported", 0: within, -1: "contradicted: QV ahead of QKV"}[_beyond(qv_sin)]
        record(1, c1, p1, qv_sin, v, detail)

    _, c2, p2 = CLAIMS[1]
    if qv_sin is None or qv_agf is None or qv_sin[1] is None or qv_agf[1] is None:
        record(2, c2, p2, None, "insufficient data", "needs ≥2 seeds of QV and QKV under both")
    else:
        change = (qv_sin[0] - qv_agf[0], math.hypot(qv_sin[1], qv_agf[1]), min(qv_sin[2],
                                                                                qv_agf[2]))
        detail = (f"gap sinusoidal {_fmt(qv_sin, metric)}, AGF {_fmt(qv_agf, metric)}")
        if _beyond(qv_sin) != 1:
            v = "not supported: no QV–QKV gap beyond noise under sinusoidal PE to shrink"
        elif _beyond(change) != 1:
            v = "not supported: the change in the gap is within noise"
        else:
            frac = change[0] / qv_sin[0]
            detail += f"; the gap shrinks by {frac:.0%}"
            v = "supported" if 0.25 <= frac <= 0.85 else "partly supported: shrinks, not by ~half"
        record(2, c2, p2, change, v, detail, key="gap_reduction")

    _, c3, p3 = CLAIMS[2]
    ka = _diff(results, "qvka2x/agf", "qkv/agf", metric)
    if ka is None or ka[1] is None:
        record(3, c3, p3, ka, "insufficient data", "needs ≥2 seeds of QV-Ka(2×) and QKV, AGF")
    else:
        detail = f"QV-Ka(2×) − QKV: {_fmt(ka, metric)}"
        b = _beyond(ka)
        if b == 0:
            v = "supported: indistinguishable from QKV within noise"
        elif b == -1:
            v = "contradicted: QV-Ka(2×) is ahead of QKV beyond noise"
        elif qv_agf is not None and abs(ka[0]) <= 0.5 * abs(qv_agf[0]):
            v = "partly supported: behind QKV, but by less than half of QV's gap"
        else:
            v = "not supported: behind QKV beyond noise"
        record(3, c3, p3, ka, v, detail)
    return out


def summary_text(data: dict[str, Any]) -> str:
    """A `summary` as lines: mean ± sd per cell (accuracy in %), then each claim's verdict."""
    def sd(v: float | None) -> str:
        return f"{v:.3f}" if v is not None else "-"

    lines = [f"{key:<22} n={c['n']}  val_loss {c['val_loss_mean']:.4f} ± {sd(c['val_loss_sd'])}"
             f"  val_acc {c['val_acc_mean']:.2f} ± {sd(c['val_acc_sd'])} %"
             for key, c in data.get("cells", {}).items()]
    if data.get("incomplete"):
        lines.append(f"incomplete: {', '.join(data['incomplete'])}")
    lines += [f"({c['id']}) {c['claim']} [paper: {c['paper']}]\n    {c['text']}"
              for c in data.get("claims", [])]
    return "\n".join(lines)


def summary(root: str | Path = "runs", *, prefix: str = GRID_NAME, metric: str = "val_loss",
            command: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """aggregate + claims + the paper's tables (+ the producing command); optionally saved."""
    results = aggregate(root, prefix=prefix)
    data = {**results, "claims": claims(results, metric=metric), "paper": PAPER_TABLES,
            "paper_source": SOURCE, "command": command}
    if out is not None:
        from qvka_core.jobs.store import atomic_write_json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out), data)
    return data
