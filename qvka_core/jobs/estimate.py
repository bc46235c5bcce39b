"""A time and memory *estimate* for a training run before it is launched.

time   = (training FLOPs per step x steps + evaluation FLOPs) / assumed throughput + start-up
         throughput: CPU ~90 GFLOP/s (measured on 2 cores, notes/stack.md); a GPU: its dense
         bf16 peak from `qvka_core.hardware` x 35 % MFU.
memory = params x (4 weights + 4 grads + 8 AdamW moments) bytes + activations, where
         activations ~ batch x seq_len x d_model x n_layers x 34 bytes (fp32, no recompute;
         Korthikanti et al. 2022 without the attention-score term) + scores batch x heads x
         seq_len² x n_layers x 4 bytes, + logits batch x seq_len x vocab x 8 bytes.
It is labelled an estimate everywhere; tiny models on CPU run well below the assumed rate.
"""

from __future__ import annotations

from typing import Any

from qvka_core import limits
from qvka_core.errors import ConfigError, DataError, LabError, RunError
from qvka_core.jobs.devices import memory_bytes

CPU_FLOPS = 90e9
GPU_MFU = 0.35
STARTUP_S = 6.0  # interpreter + torch import + data/tokenizer load, measured ~4-8 s on CPU
DEFAULT_GPU = "H100 SXM"


def args_from_argv(argv: list[str]) -> Any:
    """A `TrainArgs` from train options (["--variant", "qv", "--steps", "50", ...]), parsed
    by the train command's own (generated) parser; a bad option is one RunError."""
    from qvka_core.train.flags import parse_train_argv

    return parse_train_argv(argv)


def _model_config(args: Any) -> Any:
    if args.init:
        from qvka_core.checkpoints.resolve import find
        from qvka_core.checkpoints.store import read_config
        from qvka_core.presets import get_preset

        try:  # a name (bundled, run, embedded) or a directory; embedded: its preset
            name, _, directory = find(args.init)
            cfg = get_preset(name) if directory is None else read_config(directory)
            return cfg if not args.variant or args.variant == cfg.variant else \
                cfg.with_variant(args.variant)
        except (LabError, OSError) as exc:
            raise RunError(f"cannot read the config of init checkpoint {args.init!r}: "
                           f"{exc}") from exc
    from qvka_core.train.setup import model_config

    vocab = 4096
    if args.preset != "austen":
        from qvka_core.presets import get_preset

        vocab = get_preset(args.preset).vocab_size
    return model_config(args, vocab)


def measured_flops(root: Any, device: str = "cpu", limit: int = 10) -> float | None:
    """Median effective training FLOP/s of the latest completed runs under `root` on `device`
    ("cpu" or "cuda"): accounted FLOPs of the tokens trained / elapsed wall seconds."""
    from pathlib import Path

    from qvka_core.accounting import flops_breakdown
    from qvka_core.config import ModelConfig
    from qvka_core.jobs.status import read_metrics
    from qvka_core.jobs.store import read_json

    rates: list[tuple[float, float]] = []
    for run_dir in Path(root).iterdir() if Path(root).is_dir() else []:
        status = read_json(run_dir / "status.json") or {}
        cfg = read_json(run_dir / "config.json") or {}
        job = read_json(run_dir / "job.json") or {}
        used = ",".join(job.get("assigned") or []) or str(cfg.get("train", {}).get("device"))
        if status.get("state") != "completed" or ("cuda" in used) != (device == "cuda"):
            continue
        recs = [r for r in read_metrics(run_dir) if r.get("tokens") and r.get("elapsed_s")]
        if not recs or "model" not in cfg:
            continue
        try:
            model = ModelConfig.from_dict(cfg["model"])
            seq = int(cfg["train"]["seq_len"])
            per_token = flops_breakdown(model, seq_len=seq)["training_per_token"]
        except (LabError, KeyError, TypeError, ValueError):
            continue
        last = recs[-1]
        rates.append((run_dir.stat().st_mtime, per_token * last["tokens"] / last["elapsed_s"]))
    if not rates:
        return None
    latest = sorted(rates, reverse=True)[:limit]
    values = sorted(r for _, r in latest)
    return values[len(values) // 2]


def _as_args(train_args: Any) -> Any:
    """TrainArgs from TrainArgs, a dict of its fields, or train argv."""
    from qvka_core.train.args import TrainArgs

    if isinstance(train_args, (list, tuple)):
        return args_from_argv([str(a) for a in train_args])
    if isinstance(train_args, dict):
        return TrainArgs(**train_args)
    return train_args


def preflight(train_args: Any) -> None:
    """Refuse now what the trainer would refuse at start-up once it reads the model's config
    (no weights are loaded): a sequence longer than the model's positions, an init checkpoint
    that cannot be found. Jobs are checked before they are queued, forms before launch."""
    args = _as_args(train_args)
    cfg = _model_config(args)
    if args.seq_len > cfg.max_seq_len:
        raise ConfigError(f"seq_len {args.seq_len} exceeds the model's max_seq_len "
                          f"{cfg.max_seq_len} ({args.init or args.preset})")
    if args.data != "austen":
        _check_text_file(args.data, args.seq_len)
        _check_tokens(args)


EXACT_TOKENS_MAX_BYTES = 16 * 2**20  # tokenised in the check (cached on disk for the run)


def _check_tokens(args: Any) -> None:
    """Each split holds seq_len + 2 *tokens* (characters are only an upper bound): counted
    with the run's tokenizer when it is a tokenizer.json (from scratch, or an init folder
    that has one) and the file is small enough to tokenise now."""
    from pathlib import Path

    from qvka_core.data import TOKENIZER_PATH, check_enough, load_tokenizer, token_data

    if Path(args.data).stat().st_size > EXACT_TOKENS_MAX_BYTES:
        return
    if args.init is None:
        path = Path(args.tokenizer or TOKENIZER_PATH)
        key = f"file:{path.resolve()}"  # the trainer's key: its cache entry is this one
    else:
        from qvka_core.checkpoints.resolve import find

        directory = find(args.init)[2]
        path = directory / "tokenizer.json" if directory is not None else None
        if path is None or not path.is_file():
            return
        key = ""  # EOS may differ from the trainer's: a count that passes here passes there
    check_enough(token_data(args.data, load_tokenizer(path), tokenizer_key=key),
                 args.seq_len)


def check_memory(train_args: Any, kind: str = "cpu") -> None:
    """Refuse (ConfigError) a run whose estimated peak memory exceeds the memory of the
    device `kind` ("cpu" or "cuda..."), naming the sizes given; reads configs, no weights."""
    args = _as_args(train_args)
    cfg = _model_config(args)
    total = sum(limits.training_parts(cfg, batch=args.batch, seq_len=args.seq_len,
                                      eval_batches=args.eval_batches,
                                      teacher=args.distill != "none").values())
    given = (f"n_layers {cfg.n_layers}, d_model {cfg.d_model}, batch {args.batch}, seq_len "
             f"{args.seq_len}, eval_batches {args.eval_batches}")
    limits.fits(total, what="the run's peak memory", given=given, kind=kind)


def _check_text_file(path: str, seq_len: int) -> None:
    """The file exists and is text (DataError otherwise), and each split can hold one window:
    a token spans at least one character, so a part with fewer than seq_len + 2 characters
    certainly has fewer than seq_len + 2 tokens (the trainer checks the exact count)."""
    from qvka_core.data import read_text_file, split_text

    for split, part in zip(("train", "validation"), split_text(read_text_file(path)),
                           strict=True):
        if len(part) < seq_len + 2:
            raise DataError(f"data {path}: its {split} part has {len(part)} characters, too few "
                            f"for one window of seq_len + 2 = {seq_len + 2} tokens; use a longer "
                            "text or a shorter seq_len")


def estimate(train_args: Any, *, device: str = "cpu", gpu: str | None = None,
             n_gpus: int = 1, root: Any = None) -> dict[str, Any]:
    """Estimated wall time and peak memory of a run (TrainArgs, a dict of its fields, or argv).

    Returns a dict with "estimate": True, seconds, memory bytes by part, the throughput
    assumed and the formula, so a page can show it next to the launch button. With `root`
    (a runs root), "measured_seconds" also gives the time at the effective FLOP/s of the
    latest completed runs there on the same device kind (None if there are none).
    """
    from qvka_core.accounting import flops_breakdown, param_breakdown

    args = _as_args(train_args)
    cfg = _model_config(args)
    params = sum(param_breakdown(cfg).values())
    fl = flops_breakdown(cfg, seq_len=args.seq_len, batch=args.batch)
    train_flops = fl["training_per_step"] * args.steps
    n_evals = args.steps // args.eval_every + 1
    eval_flops = fl["forward_per_step"] * args.eval_batches * n_evals
    on_gpu = device.startswith("cuda")
    if on_gpu:
        from qvka_core.hardware import get_gpu

        gpu_spec = get_gpu(gpu or DEFAULT_GPU)
        throughput = gpu_spec.peak_flops * GPU_MFU * max(1, n_gpus)
        basis = f"{gpu_spec.name} bf16 peak x {GPU_MFU:.0%} MFU x {max(1, n_gpus)} GPU(s)"
    else:
        throughput = CPU_FLOPS
        basis = "CPU ~90 GFLOP/s (measured on 2 cores)"
    tokens = args.batch * args.seq_len
    memory = limits.training_parts(cfg, batch=args.batch, seq_len=args.seq_len,
                                   eval_batches=args.eval_batches,
                                   teacher=args.distill != "none")
    total = sum(memory.values())
    kind = "cuda" if on_gpu else "cpu"
    capacity = memory_bytes(kind)
    warning = None
    if capacity and total > capacity:
        warning = (f"the estimated peak memory, {total / 2**30:,.1f} GiB, is more than this "
                   f"machine's {capacity / 2**30:,.1f} GiB ({'GPU' if on_gpu else 'RAM'}): "
                   "the run may be killed; lower the batch or the sequence length")
    compute_s = (train_flops + eval_flops) / throughput
    measured = measured_flops(root, "cuda" if on_gpu else "cpu") if root is not None else None
    return {
        "estimate": True,
        "label": "estimate from analytic FLOPs and an assumed throughput; not a measurement",
        "device": "cuda" if on_gpu else "cpu",
        "params": params,
        "tokens": tokens * args.steps,
        "training_flops": train_flops,
        "eval_flops": eval_flops,
        "throughput_flops": throughput,
        "throughput_basis": basis,
        "startup_s": STARTUP_S,
        "seconds": STARTUP_S + compute_s,
        "seconds_per_step": compute_s / args.steps,
        "measured_flops": measured,
        "measured_seconds": (STARTUP_S + (train_flops + eval_flops) / measured
                             if measured else None),
        "memory_bytes": memory,
        "memory_total_bytes": total,
        "memory_capacity_bytes": capacity,
        "warning": warning,
    }


# --- calibration from runs finished on this machine --------------------------------------------
def _iso_seconds(stamp: Any) -> float | None:
    import calendar
    import time

    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def measured_runs(root: Any, device: str = "cpu") -> list[dict[str, Any]]:
    """What each completed run under `root` on `device` ("cpu" or "cuda") was, and how long it
    took, from its own files: config.json (model, train options), metrics.jsonl (tokens,
    tokens_per_s, elapsed_s of the training loop) and, for queued runs, job.json (started_at
    and finished_at, so the start-up before the loop is measured too)."""
    from pathlib import Path

    from qvka_core.accounting import flops_breakdown, param_breakdown
    from qvka_core.config import ModelConfig
    from qvka_core.jobs.status import read_metrics
    from qvka_core.jobs.store import read_json

    out: list[dict[str, Any]] = []
    for run_dir in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        status = read_json(run_dir / "status.json") or {}
        cfg = read_json(run_dir / "config.json") or {}
        job = read_json(run_dir / "job.json") or {}
        train = cfg.get("train") or {}
        assigned = list(job.get("assigned") or [])
        used = ",".join(assigned) or str(train.get("device"))
        if status.get("state") != "completed" or ("cuda" in used) != (device == "cuda"):
            continue
        recs = [r for r in read_metrics(run_dir) if r.get("elapsed_s") is not None]
        last = recs[-1] if recs else {}
        if not last.get("tokens") or "model" not in cfg:
            continue
        try:
            model = ModelConfig.from_dict(cfg["model"])
            seq_len, batch = int(train["seq_len"]), int(train["batch"])
            per_token = flops_breakdown(model, seq_len=seq_len)["training_per_token"]
        except (LabError, KeyError, TypeError, ValueError):
            continue
        first = float(recs[0]["elapsed_s"]) if recs[0].get("step") == 0 else 0.0
        begun, ended = _iso_seconds(job.get("started_at")), _iso_seconds(job.get("finished_at"))
        startup = None  # a resumed run's clock spans attempts: its start-up is not measured
        if begun is not None and ended is not None and not job.get("attempts"):
            startup = max(0.0, ended - begun - float(last["elapsed_s"]))
        out.append({
            "run": run_dir.name, "params": sum(param_breakdown(model).values()),
            "variant": model.variant, "seq_len": seq_len, "batch": batch,
            "distill": str(train.get("distill") or "none") != "none",
            "from_checkpoint": bool(train.get("init")), "n_gpus": max(1, len(assigned)),
            "tokens": int(last["tokens"]), "loop_s": float(last["elapsed_s"]),
            "first_eval_s": first, "startup_s": startup,
            "tokens_per_s": last.get("tokens_per_s"), "flops_per_token": float(per_token),
            "mtime": run_dir.stat().st_mtime,
        })
    return out


def _distance(new: dict[str, Any], run: dict[str, Any]) -> float:
    """How unlike a measured run is to the new one: log-ratios of size, sequence and batch,
    plus penalties for a different recipe (distillation, fine-tune vs scratch, GPUs, variant)."""
    import math

    return (abs(math.log(new["params"] / run["params"]))
            + 0.5 * abs(math.log(new["seq_len"] / run["seq_len"]))
            + 0.5 * abs(math.log(new["batch"] / run["batch"]))
            + 1.0 * (new["distill"] != run["distill"])
            + 1.0 * (new["from_checkpoint"] != run["from_checkpoint"])
            + 0.5 * (new["n_gpus"] != run["n_gpus"])
            + 0.1 * (new["variant"] != run["variant"]))


CALIBRATION_NEIGHBOURS = 3  # at most this many of the closest measured runs are averaged
CALIBRATION_TIE = 0.1  # runs within this distance of the closest count as equally close


def calibrated_estimate(train_args: Any, *, root: Any, device: str = "cpu",
                        n_gpus: int = 1, gpu: str | None = None) -> dict[str, Any]:
    """`estimate(...)` plus a wall time calibrated on the closest runs finished under `root` on
    the same device kind: "calibrated" (bool), "calibrated_seconds", "basis" (a sentence the
    page shows) and "neighbours". For each close run: time = its measured start-up (job clock
    minus loop time; `STARTUP_S` when not measured) + its step-0 evaluation + the new run's
    tokens x its measured loop seconds per token x (new / its training FLOPs per token). The
    median over the closest runs is used; with none, the FLOP-based time, labelled
    "uncalibrated"."""
    from qvka_core.accounting import flops_breakdown

    args = _as_args(train_args)
    est = estimate(args, device=device, gpu=gpu, n_gpus=n_gpus, root=root)
    cfg = _model_config(args)
    kind = est["device"]
    new = {"params": est["params"], "variant": cfg.variant, "seq_len": args.seq_len,
           "batch": args.batch, "distill": args.distill != "none",
           "from_checkpoint": bool(args.init), "n_gpus": max(1, n_gpus) if kind == "cuda" else 1}
    per_token = float(flops_breakdown(cfg, seq_len=args.seq_len)["training_per_token"])
    runs = measured_runs(root, kind) if root is not None else []
    if not runs:
        return {**est, "calibrated": False, "calibrated_seconds": None, "neighbours": [],
                "basis": f"uncalibrated: analytic FLOPs at an assumed {est['throughput_basis']}; "
                         f"no run has finished on this machine's {kind} yet"}
    ranked = sorted(runs, key=lambda r: (_distance(new, r), -r["mtime"]))
    closest = _distance(new, ranked[0])
    near = [r for r in ranked[:CALIBRATION_NEIGHBOURS]
            if _distance(new, r) <= closest + CALIBRATION_TIE]
    times = []
    for r in near:
        per_token_s = (r["loop_s"] - r["first_eval_s"]) / r["tokens"]  # with periodic evals
        fixed = (STARTUP_S if r["startup_s"] is None else r["startup_s"]) + r["first_eval_s"]
        times.append(fixed + est["tokens"] * per_token_s * per_token / r["flops_per_token"])
    seconds = sorted(times)[len(times) // 2]
    names = ", ".join(f"{r['run']} ({count_label(r['params'])} params, "
                      f"{r['tokens'] / max(r['loop_s'], 1e-9):,.0f} tokens/s overall)"
                      for r in near)
    sizes = sorted((near[0]["params"], new["params"]))
    far = (f"; the closest is a different recipe or {sizes[1] / sizes[0]:.1f}x the size, so "
           "this is rough" if closest > 1.0 else "")
    return {**est, "calibrated": True, "calibrated_seconds": seconds, "neighbours": near,
            "basis": f"calibrated on {len(near)} run(s) finished here on {kind}: {names}{far}"}


def count_label(n: float) -> str:
    """134515008 -> "134.5 M", 910600 -> "910.6 k", 512 -> "512"."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f}"
