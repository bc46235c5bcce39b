"""Building blocks of a run: device, process group, model + tokenizer, optimizer, schedule."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from qvka_core.config import ModelConfig
from qvka_core.errors import ConfigError, RunError
from qvka_core.model import Transformer
from qvka_core.tokenizer import TextTokenizer
from qvka_core.train.args import TrainArgs
from qvka_core.train.bundled import AUSTEN_PRESET, austen_config
from qvka_core.variants.registry import refuse_foreign_option, variant_options


def resolve_device(name: str) -> torch.device:
    """auto: CUDA, then MPS, then CPU. An unavailable explicit device is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but MPS is not available")
    return torch.device(name)


@dataclass
class Dist:
    """The process group as this rank sees it (world 1 = no torch.distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        owns = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")), owns_group=owns)


def _option_names() -> list[str]:
    """Variant options a run may set (`variant_options()`); TrainArgs carries those it has
    a field for, read by name (None: the variant's default)."""
    return [o.name for o in variant_options(scope="model")]


def _named_options(args: TrainArgs) -> dict[str, object]:
    """`args.variant_options`, each a known variant option of a model's architecture."""
    known = _option_names()
    for name in args.variant_options:
        if name not in known:
            raise ConfigError(f"variant_options: unknown option {name!r}; options: "
                              f"{', '.join(known)}")
    return dict(args.variant_options)


def model_config(args: TrainArgs, vocab_size: int) -> ModelConfig:
    """The from-scratch model: preset, then variant (via presets.recost), then overrides."""
    seq = args.seq_len
    if args.preset == AUSTEN_PRESET:
        cfg = austen_config(vocab_size)
    else:
        from qvka_core.presets import get_preset

        cfg = get_preset(args.preset)
        if not (cfg.causal and cfg.lm_head):
            raise ConfigError(f"preset {args.preset!r} is not a causal LM; training needs one")
    cfg = cfg.replace(vocab_size=vocab_size, max_seq_len=max(cfg.max_seq_len, seq))
    if args.n_layers is not None:
        cfg = cfg.replace(n_layers=args.n_layers)
    if args.embed_scale is not None:
        cfg = cfg.replace(embed_scale=args.embed_scale)
    if args.n_heads is not None:  # head_dim follows; KV heads are re-derived by the variant
        cfg = cfg.with_attention(n_heads=args.n_heads, head_dim=None, n_kv_heads=None)
    attn: dict[str, object] = {}
    for name in ("position", *_option_names()):  # the variants' options, from their specs
        if getattr(args, name, None) is not None:
            attn[name] = getattr(args, name)
    attn.update(_named_options(args))
    kind = args.variant or cfg.variant
    for name in attn:  # another variant's knob would be dropped and the record would lie
        if name != "position":
            refuse_foreign_option(name, [kind])
    if kind != cfg.variant:
        from qvka_core.presets import recost

        return recost(cfg, kind, **attn)
    return cfg.with_attention(**attn) if attn else cfg


def build_model(args: TrainArgs,
                cfg: ModelConfig | None = None) -> tuple[Transformer, TextTokenizer, str]:
    """(model, tokenizer, tokenizer_key) for a fresh or `init` run; `cfg` forces the config."""
    from qvka_core.data import TOKENIZER_PATH, load_tokenizer

    if args.init:
        from qvka_core.checkpoints import load_checkpoint

        fixed = [n for n in (*_option_names(), "n_layers", "n_heads", "embed_scale")
                 if getattr(args, n, None) is not None] + list(args.variant_options)
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot be set with init (the checkpoint "
                              "fixes the architecture; convert it first for other options)")
        # A different variant converts on load (qvka_core.convert, via load_checkpoint).
        loaded = load_checkpoint(args.init, variant=args.variant)
        if args.position not in (None, loaded.config.position):
            raise ConfigError(f"position {args.position!r} differs from the init checkpoint's "
                              f"{loaded.config.position!r}")
        if loaded.tokenizer is None:
            raise RunError(f"init checkpoint {args.init!r} has no tokenizer")
        if not (loaded.config.causal and loaded.config.lm_head):
            raise RunError(f"init checkpoint {args.init!r} is not a causal LM with a head")
        if args.seq_len > loaded.config.max_seq_len:
            raise ConfigError(f"seq_len {args.seq_len} exceeds the init checkpoint's "
                              f"max_seq_len {loaded.config.max_seq_len}")
        model = loaded.model.float()
        if cfg is not None:  # resuming: weights come from the run's own checkpoint
            model = Transformer(cfg)
        return model, loaded.tokenizer, f"init:{args.init}"
    tok_path = args.tokenizer or str(TOKENIZER_PATH)
    tokenizer = load_tokenizer(tok_path)
    torch.manual_seed(args.seed)
    model = Transformer(cfg or model_config(args, tokenizer.vocab_size))
    return model, tokenizer, f"file:{os.path.abspath(tok_path)}"


def make_optimizer(model: nn.Module, args: TrainArgs,
                   device: torch.device) -> tuple[torch.optim.Optimizer, list[str]]:
    """AdamW; decay on matrices only. Returns the optimizer and its parameter names in order."""
    decay, no_decay, names_d, names_n = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() >= 2:
            decay.append(p)
            names_d.append(name)
        else:
            no_decay.append(p)
            names_n.append(name)
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)
    return opt, names_d + names_n


def lr_at(step: int, args: TrainArgs) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warm-up, then the schedule."""
    if args.warmup and step <= args.warmup:
        return args.lr * step / args.warmup
    if args.schedule == "constant":
        return args.lr
    span = max(1, args.steps - args.warmup)
    progress = min(1.0, (step - args.warmup) / span)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
