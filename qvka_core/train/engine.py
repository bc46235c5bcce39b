"""`run(args)`: the training loop shared by pre-training, fine-tuning and distillation.

Step s (1-based) trains on `random_windows(train, batch, seq_len, batch_generator(seed, s))`;
under DDP each rank takes rows rank::world of that same global batch, so 1 process and N
processes see identical data. Only rank 0 writes files. Per step one small all-reduce carries
the loss and the cancel flag, so every rank stops on the same step.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qvka_core import limits, machine
from qvka_core.baselines import bigram_loss, unigram_loss
from qvka_core.checkpoints.store import load_checkpoint_dir
from qvka_core.config import ModelConfig
from qvka_core.data import (
    batch_generator,
    check_enough,
    fixed_windows,
    random_windows,
    token_data,
)
from qvka_core.errors import RunError
from qvka_core.jobs.estimate import check_memory
from qvka_core.model import Transformer
from qvka_core.train.args import RESUME_MUTABLE, TrainArgs
from qvka_core.train.rundir import RUN_FORMAT, RunDir, read_json, write_json
from qvka_core.train.setup import (
    Dist,
    build_model,
    init_distributed,
    lr_at,
    make_optimizer,
    resolve_device,
)

MetricsCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: Path
    state: str  # completed | cancelled | diverged | failed
    step: int
    message: str = ""
    val_loss: float | None = None
    val_acc: float | None = None
    unigram_loss: float | None = None
    bigram_loss: float | None = None
    tokens: int = 0
    wall_s: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _prepare_dir(args: TrainArgs, rd: RunDir) -> ModelConfig | None:
    """Check the directory for a new or resumed run; returns the stored config on resume."""
    path = rd.path
    limits.check_writable_dir(path, "out/name")
    if not args.resume:
        if path.exists():
            entries = {p.name for p in path.iterdir()
                       if p.name not in ("job.json", "log.txt", "CANCEL")
                       and not p.name.startswith(".")}
            queued = entries <= {"status.json"} and (
                not entries or read_json(rd.status_path).get("state") == "queued")
            if not queued:
                raise RunError(f"run directory {path} already exists; pass resume to continue "
                               "it or choose another name")
        return None
    if not (path / "config.json").exists():
        raise RunError(f"cannot resume: {path} has no config.json (no run was started there)")
    stored = read_json(path / "config.json")
    old = TrainArgs.from_dict(stored["train"])
    diff = [k for k, v in args.to_dict().items()
            if k not in RESUME_MUTABLE and old.to_dict().get(k) != v]
    if diff:
        raise RunError(f"cannot resume {path} with changed field(s): {', '.join(diff)}")
    if rd.status_path.exists():
        status = read_json(rd.status_path)
        pid = int(status.get("pid") or 0)
        created = status.get("pid_created")  # absent in older runs: the pid alone decides
        if (status.get("state") == "running" and pid != os.getpid()
                and machine.alive(pid, created=created if isinstance(created, float) else None)):
            raise RunError(f"run {path} is still running (pid {pid})")
    return ModelConfig.from_dict(stored["model"])


def _loss_terms(model: torch.nn.Module, x: Tensor, y: Tensor, args: TrainArgs,
                teacher: Transformer | None) -> tuple[Tensor, Tensor]:
    """(total loss, cross-entropy), both scalars; x, y (b, T)."""
    out = model(x)
    logits = out.logits.float()  # (b, T, V)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if teacher is None:
        return ce, ce
    with torch.no_grad():
        t_out = teacher(x)
    if args.distill == "logits":
        t = args.temperature
        s_logp = F.log_softmax(logits / t, dim=-1).reshape(-1, logits.shape[-1])
        t_logp = F.log_softmax(t_out.logits.float() / t, dim=-1).reshape(-1, logits.shape[-1])
        kd = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean") * t * t
    else:
        kd = F.mse_loss(out.hidden_states.float(), t_out.hidden_states.float())
    w = args.distill_weight
    return (1 - w) * ce + w * kd, ce


def _frozen(ref: str, role: str, student: Transformer, device: torch.device) -> Transformer:
    """A checkpoint as a frozen fp32 model on `device` with the student's vocabulary."""
    from qvka_core.checkpoints import load_checkpoint

    other = load_checkpoint(ref).model.float().to(device).eval()
    other.requires_grad_(False)
    if other.cfg.vocab_size != student.cfg.vocab_size:
        raise RunError(f"{role} and student vocabularies differ "
                       f"({other.cfg.vocab_size} vs {student.cfg.vocab_size})")
    return other


@torch.no_grad()
def evaluate(model: Transformer, xs: Tensor, ys: Tensor, batch: int, device: torch.device,
             dist: Dist, amp: contextlib.AbstractContextManager) -> tuple[float, float]:
    """(mean loss, next-token accuracy) over fixed windows xs, ys (N, T), sharded by rank."""
    was_training = model.training
    model.eval()
    xs, ys = xs[dist.rank::dist.world], ys[dist.rank::dist.world]
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for i in range(0, xs.shape[0], batch):
        x, y = xs[i:i + batch].to(device), ys[i:i + batch].to(device)
        with amp:
            logits = model(x).logits.float()  # (b, T, V)
        totals[0] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").double()
        totals[1] += (logits.argmax(-1) == y).sum().double()
        totals[2] += y.numel()
    if dist.enabled:
        torch.distributed.all_reduce(totals)
    model.train(was_training)
    count = max(float(totals[2]), 1.0)
    return float(totals[0]) / count, float(totals[1]) / count


def run(args: TrainArgs, *, on_metrics: MetricsCallback | None = None) -> RunResult:
    """Train as `args` says; returns how it ended. User errors raise RunError/ConfigError/
    DataError before any file is written; a crash marks status.json "failed"."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dist = init_distributed(device.type)
    try:
        result = _run(args, on_metrics, device, dist)
        if dist.owns_group:  # every rank done before any tears down: a rank that closed
            torch.distributed.barrier()  # its gloo pairs early aborted its peer (exit -6)
        return result
    finally:
        if dist.owns_group:
            torch.distributed.destroy_process_group()


def _run(args: TrainArgs, on_metrics: MetricsCallback | None, device: torch.device,
         dist: Dist) -> RunResult:
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if args.batch % dist.world:
        raise RunError(f"batch ({args.batch}) must be divisible by the {dist.world} processes")
    rd = RunDir(args.run_dir)
    stored_cfg = _prepare_dir(args, rd)
    if dist.enabled:
        torch.distributed.barrier()  # rank 0's directory checks happen before anyone writes
    if os.environ.get("QVKA_FORCE_MEMORY") != "1":  # jobs submit --force-memory sets it
        check_memory(args, device.type)  # before anything is allocated (qvka_core.limits)
    model, tokenizer, tok_key = build_model(args, stored_cfg)
    data = token_data(args.data, tokenizer, tokenizer_key=tok_key)
    check_enough(data, args.seq_len)
    if model.cfg.vocab_size < data.vocab_size:
        raise RunError(f"model vocab {model.cfg.vocab_size} < tokenizer vocab {data.vocab_size}")
    teacher = None
    if args.distill != "none":
        teacher = _frozen(args.teacher, "teacher", model, device)
        if args.distill == "hidden" and teacher.cfg.d_model != model.cfg.d_model:
            raise RunError("distill=hidden needs equal d_model (teacher "
                           f"{teacher.cfg.d_model}, student {model.cfg.d_model})")

    model.to(device).train()
    opt, param_names = make_optimizer(model, args, device)
    start_step, elapsed_prev = 0, 0.0
    if args.resume and dist.is_main:
        rd.resume_checkpoint()
    if dist.enabled:
        torch.distributed.barrier()  # rank 0 repairs an interrupted switch before others read
    ckpt_step = rd.checkpoint_step() if args.resume else None
    if ckpt_step is not None:
        state = load_checkpoint_dir(rd.checkpoint_path).model.state_dict()
        model.load_state_dict(state)
        info = rd.load_state(ckpt_step, opt, param_names)
        start_step, elapsed_prev = ckpt_step, float(info.get("elapsed_s", 0.0))
    reference = teacher if start_step == 0 else None  # a resumed run has its step-0 record
    if start_step == 0 and args.reference not in (None, args.teacher):
        reference = _frozen(args.reference, "reference", model, device)
    if dist.is_main:
        rd.path.mkdir(parents=True, exist_ok=True)
        if args.resume:
            rd.truncate_metrics(start_step if ckpt_step is not None else -1)
        write_json(rd.path / "config.json", {"format": RUN_FORMAT, "train": args.to_dict(),
                                             "model": model.cfg.to_dict()})
        rd.set_status("running", start_step, "resumed" if args.resume else "started",
                      total_steps=args.steps)
        rd.log(f"{'resume' if args.resume else 'start'} {rd.path} at step {start_step}/"
               f"{args.steps} on {device} x{dist.world}; "
               f"{sum(p.numel() for p in model.parameters()):,} params")
    ddp_model: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp: contextlib.AbstractContextManager = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
        else contextlib.nullcontext())
    val_x, val_y = fixed_windows(data.validation, args.eval_batches * args.batch, args.seq_len)
    # Baselines on exactly the windows the run is scored on (like for like).
    baselines = {"unigram_loss": unigram_loss(data.train, val_y, data.vocab_size),
                 "bigram_loss": bigram_loss(data.train, val_x, val_y, data.vocab_size)[0]}
    tokens_per_step = args.batch * args.seq_len
    loop = _Loop(args, rd, dist, model, ddp_model, opt, param_names, tokenizer, device, amp,
                 data.train, val_x, val_y, teacher, baselines, on_metrics, elapsed_prev)
    loop.reference, reference = reference, None  # the loop lets go of it after step 0
    try:
        state, message, step = loop.train(start_step)
    except BaseException as exc:
        if dist.is_main:
            rd.set_status("cancelled" if isinstance(exc, KeyboardInterrupt) else "failed",
                          loop.step, f"{type(exc).__name__}: {exc}")
        raise
    if dist.is_main:
        rd.set_status(state, step, message, total_steps=args.steps,
                      val_loss=loop.last_val[0], val_acc=loop.last_val[1])
        rd.log(f"{state} at step {step}: {message}")
        if state in ("completed", "cancelled"):
            rd.cancel_path.unlink(missing_ok=True)
    return RunResult(run_dir=rd.path, state=state, step=step, message=message,
                     val_loss=loop.last_val[0], val_acc=loop.last_val[1], **baselines,
                     tokens=step * tokens_per_step, wall_s=loop.elapsed(),
                     metrics=rd.read_metrics() if dist.is_main else [])


class _Loop:
    """The step loop and its bookkeeping (metrics, evaluation, checkpoints)."""

    def __init__(self, args: TrainArgs, rd: RunDir, dist: Dist, model: Transformer,
                 ddp_model: torch.nn.Module, opt: torch.optim.Optimizer, param_names: list[str],
                 tokenizer: Any, device: torch.device, amp: contextlib.AbstractContextManager,
                 train: Tensor, val_x: Tensor, val_y: Tensor, teacher: Transformer | None,
                 baselines: dict[str, float], on_metrics: MetricsCallback | None,
                 elapsed_prev: float) -> None:
        self.args, self.rd, self.dist, self.model, self.ddp_model = args, rd, dist, model, ddp_model
        self.opt, self.param_names, self.tokenizer = opt, param_names, tokenizer
        self.device, self.amp, self.train_tokens = device, amp, train
        self.val_x, self.val_y, self.teacher, self.baselines = val_x, val_y, teacher, baselines
        self.on_metrics, self.elapsed_prev = on_metrics, elapsed_prev
        self.step = 0
        self.reference: Transformer | None = None
        self.last_val: tuple[float | None, float | None] = (None, None)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_prev + time.perf_counter() - self.t0

    def train(self, start: int) -> tuple[str, str, int]:
        args, dist = self.args, self.dist
        self.step = start
        if start == 0:
            first: dict[str, Any] = {"step": 0, "tokens": 0, **self.baselines}
            if self.reference is not None:  # same windows, same context: a fair baseline
                rl, ra = evaluate(self.reference, self.val_x, self.val_y, args.batch,
                                  self.device, dist, self.amp)
                first.update(ref_val_loss=rl, ref_val_acc=ra)
                self.reference = None  # freed unless it is also the teacher
            self._record(first, evaluate_now=True)
        # Loss sums and the non-finite flag stay on the device between checks: the host reads
        # them (one sync, one all-reduce under DDP) only at log, eval and checkpoint steps,
        # so a GPU never waits on the host in between.
        dev = self.device
        loss_sum, ce_last = torch.zeros((), device=dev), torch.zeros((), device=dev)
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        t_train, steps_timed, last_good = 0.0, 0, self.step
        rows = slice(dist.rank, None, dist.world)
        while self.step < args.steps:
            s = self.step + 1
            t = time.perf_counter()
            lr = lr_at(s, args)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x, y = random_windows(self.train_tokens, args.batch, args.seq_len,
                                  batch_generator(args.seed, s))
            x, y = x[rows].to(dev), y[rows].to(dev)
            with self.amp:
                loss, ce = _loss_terms(self.ddp_model, x, y, args, self.teacher)
            bad |= ~torch.isfinite(loss.detach())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.grad_clip)
                bad |= ~torch.isfinite(norm)
            self.opt.step()
            self.step = s
            loss_sum += (ce if self.teacher is None else loss).detach().float()
            ce_last = ce.detach().float()
            steps_timed += 1
            checkpoint_now = s == args.steps or bool(
                args.checkpoint_every and s % args.checkpoint_every == 0)
            # One process sees the CANCEL file at once (a host-only stat); DDP ranks agree on
            # it at the next check step.
            cancel = float(dist.is_main and (not dist.enabled or checkpoint_now
                                             or s % args.log_every == 0)
                           and self.rd.cancel_path.exists())
            if not (s % args.log_every == 0 or s % args.eval_every == 0 or checkpoint_now
                    or cancel):
                t_train += time.perf_counter() - t
                continue
            flags = torch.stack([loss_sum / steps_timed, ce_last, bad.float(),
                                 torch.tensor(cancel, device=dev)])
            if dist.enabled:
                torch.distributed.all_reduce(flags)
                flags[:2] /= dist.world
            mean_loss, ce_val, bad_flag, cancel_flag = (float(v) for v in flags.tolist())
            t_train += time.perf_counter() - t
            if bad_flag > 0 or not math.isfinite(mean_loss):
                return "diverged", (f"non-finite loss or gradient between steps {last_good + 1} "
                                    f"and {s}; no checkpoint written from this state (last "
                                    f"good: {self.rd.checkpoint_step()})"), last_good
            last_good = s
            final = s == args.steps or cancel_flag > 0
            do_eval = s % args.eval_every == 0 or final
            if s % args.log_every == 0 or do_eval:
                record = {"step": s, "tokens": s * args.batch * args.seq_len, "loss": mean_loss,
                          "lr": lr, "tokens_per_s": steps_timed * args.batch * args.seq_len
                          / max(t_train, 1e-9)}
                if self.teacher is not None:
                    record["ce"] = ce_val
                self._record(record, evaluate_now=do_eval)
                loss_sum.zero_()
                t_train, steps_timed = 0.0, 0
            if final or checkpoint_now:
                self._checkpoint(s)
            if cancel_flag > 0:
                return "cancelled", f"cancelled at step {s} (CANCEL file)", s
        return "completed", f"{self.step} steps", self.step

    def _record(self, record: dict[str, Any], *, evaluate_now: bool) -> None:
        if evaluate_now:
            vl, va = evaluate(self.model, self.val_x, self.val_y, self.args.batch, self.device,
                              self.dist, self.amp)
            self.last_val = (vl, va)
            record.update(val_loss=vl, val_acc=va)
        record["elapsed_s"] = round(self.elapsed(), 3)
        if not self.dist.is_main:
            return
        self.rd.append_metrics(record)
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in record.items()]
        self.rd.log(" ".join(parts))
        self.rd.set_status("running", record["step"], total_steps=self.args.steps)
        if self.on_metrics is not None:
            self.on_metrics(dict(record))

    def _checkpoint(self, step: int) -> None:
        if not self.dist.is_main:
            return
        self.rd.save_state(step, self.opt, self.param_names, {"elapsed_s": self.elapsed()})
        meta = {"step": step, "run": self.rd.path.name, "val_loss": self.last_val[0],
                "val_acc": self.last_val[1], **self.baselines,
                "tokens": step * self.args.batch * self.args.seq_len, "seed": self.args.seed}
        self.rd.save_checkpoint(step, self.model, self.tokenizer, meta)
        self.rd.prune_states(step)
        self.rd.log(f"checkpoint at step {step}")
