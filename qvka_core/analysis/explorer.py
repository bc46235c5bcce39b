"""The Explorer's engine: run each chosen model once on a text (eager kernel, weights
returned), keep the attention probabilities as numpy, and derive what the views need.

A "loaded-like" model is anything with `.model` (Transformer), `.tokenizer` (with
`encode(text) -> Encoding(ids, tokens, offsets)`), `.config` and `.name`, e.g.
`qvka_core.checkpoints.LoadedModel` or `random_model(...)` below.

Notation: L layers, H heads, T tokens. Attentions are stored per layer as (H, T, T) float16
(memory: 30 layers x 9 heads x 256² would be 70 MB in float32 per model).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from qvka_core.analysis import stats
from qvka_core.config import AttentionConfig, ModelConfig
from qvka_core.errors import LabError
from qvka_core.model import Transformer
from qvka_core.variants.registry import DemoConfigs

EXPLORER_MAX_TOKENS = 256  # beyond this, heatmaps stop being readable and memory grows as T²


class LoadedLike(Protocol):
    model: Transformer
    tokenizer: Any
    config: ModelConfig
    name: str


# --- a tokenizer and models for the randomly initialised family ---------------------------
@dataclass(frozen=True)
class SimpleEncoding:
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]


class WordTokenizer:
    """Words and punctuation marks; ids are a stable hash into the vocabulary."""

    _PATTERN = re.compile(r"\w+|[^\w\s]")

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str) -> SimpleEncoding:
        spans = [(m.start(), m.end()) for m in self._PATTERN.finditer(text)]
        tokens = [text[s:e] for s, e in spans]
        ids = [zlib.crc32(t.lower().encode()) % self.vocab_size for t in tokens]
        return SimpleEncoding(ids=ids, tokens=tokens, offsets=spans)


@dataclass
class RandomModel:
    model: Transformer
    tokenizer: WordTokenizer
    config: ModelConfig
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


# variant -> AttentionConfig kwargs from its spec's demo options; live: every registered one
RANDOM_VARIANTS: Mapping[str, dict[str, Any]] = DemoConfigs()


def random_config(variant: str, *, causal: bool = True) -> ModelConfig:
    """A small decoder (4 layers, 8 heads, d=128) with `variant` attention."""
    attn = AttentionConfig(kind=variant, d_model=128, n_heads=8, causal=causal,
                           position="rope", **RANDOM_VARIANTS.get(variant, {}))
    return ModelConfig(attention=attn, n_layers=4, vocab_size=4096, ffn_dim=512,
                       max_seq_len=512, name=f"random-{variant}")


def random_model(variant: str, *, seed: int = 0, causal: bool = True,
                 sharpen: float = 4.0) -> RandomModel:
    """Randomly initialised model (fixed seed), eval mode, no gradients.

    With GPT-2's init (std 0.02) every score is ~0 and each map is uniform; the attention
    weights are scaled by `sharpen` so that random heads show visible, distinct patterns.
    """
    cfg = random_config(variant, causal=causal)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Transformer(cfg).eval().requires_grad_(False)
    finally:
        torch.random.set_rng_state(gen_state)
    for layer in model.layers:
        for name, p in layer.attn.named_parameters():
            if name.endswith("weight") and "o_proj" not in name and "norm" not in name:
                p.mul_(sharpen)
    return RandomModel(model=model, tokenizer=WordTokenizer(cfg.vocab_size), config=cfg,
                       name=f"random-{variant}", meta={"random": True})


# --- one run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantRun:
    """One model on one text. Picklable, so Streamlit can cache it."""

    name: str
    variant: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    attentions: list[np.ndarray]  # per layer (H, T, T), float16
    groups: list[list[list[int]]]  # per layer: query heads per KV head / latent
    causal: bool
    stats: pd.DataFrame
    n_tokens_in_text: int  # before truncation

    @property
    def truncated(self) -> bool:
        return self.n_tokens_in_text > len(self.tokens)

    @property
    def special(self) -> list[bool]:
        """Per token: added by the tokenizer ([CLS], [SEP], <s>), i.e. it covers no text."""
        return [start == end for start, end in self.offsets]


def token_limit(loaded: LoadedLike) -> int:
    return min(EXPLORER_MAX_TOKENS, loaded.config.max_seq_len)


def run_model(loaded: LoadedLike, text: str) -> VariantRun:
    """Tokenize, truncate to the limit, forward once (eager), return probabilities."""
    if not text.strip():
        raise LabError("enter some text to explore")
    if loaded.tokenizer is None:
        raise LabError(f"model {loaded.name} has no tokenizer, so it cannot read text")
    enc = loaded.tokenizer.encode(text)
    limit = token_limit(loaded)
    ids = list(enc.ids)[:limit]
    if not ids:
        raise LabError("the text produced no tokens")
    model = loaded.model
    with torch.inference_mode():
        out = model(torch.tensor([ids]), impl="eager", return_attentions=True)
    attns = [a[0].float().numpy() for a in out.attentions]  # per layer (H, T, T)
    return VariantRun(
        name=loaded.name,
        variant=loaded.config.variant,
        tokens=list(enc.tokens)[:limit],
        offsets=[tuple(o) for o in list(enc.offsets)[:limit]],
        attentions=[a.astype(np.float16) for a in attns],
        groups=[layer.attn.kv_groups() for layer in model.layers],
        causal=loaded.config.causal,
        stats=stats.head_stats(attns, first_query=int(loaded.config.causal)),  # q0: trivial
        n_tokens_in_text=len(enc.ids),
    )


# --- the Explorer's result -------------------------------------------------------------------
@dataclass
class ExplorerResult:
    runs: dict[str, VariantRun]  # label -> run, in the order chosen
    layer: int
    head: int | None  # None = mean over heads

    @property
    def labels(self) -> list[str]:
        return list(self.runs)

    @property
    def n_layers(self) -> int:
        return min(len(r.attentions) for r in self.runs.values())

    @property
    def n_heads(self) -> int:
        return min(r.attentions[0].shape[0] for r in self.runs.values())

    def tokens(self, label: str) -> list[str]:
        return self.runs[label].tokens

    def map(self, label: str, layer: int | None = None, head: int | None | str = "current"
            ) -> np.ndarray:
        """(T, T) map of `label` at the chosen (or given) layer and head."""
        layer = self.layer if layer is None else layer
        head = self.head if head == "current" else head
        run = self.runs[label]
        return stats.select(run.attentions[layer].astype(np.float64), head)  # type: ignore[arg-type]

    def comparable(self, a: str, b: str) -> bool:
        return self.runs[a].tokens == self.runs[b].tokens and (
            [x.shape for x in self.runs[a].attentions] == [x.shape for x in self.runs[b].attentions]
        )

    def difference(self, a: str, b: str) -> np.ndarray:
        if self.runs[a].tokens != self.runs[b].tokens:
            raise LabError(f"{a} and {b} tokenize the text differently; pick the same family")
        return stats.difference(self.map(a), self.map(b))

    def divergence(self, a: str, b: str) -> np.ndarray:
        """(L, H) Jensen-Shannon matrix between two runs."""
        if self.runs[a].tokens != self.runs[b].tokens:
            raise LabError(f"{a} and {b} tokenize the text differently; pick the same family")
        return stats.divergence_matrix(self.runs[a].attentions, self.runs[b].attentions)

    def rollout(self, label: str) -> np.ndarray:
        """(T, T) rollout up to and including the chosen layer."""
        return stats.rollout(self.runs[label].attentions)[self.layer]

    def pos_pairs(self, label: str, text: str, hide_special: bool = False) -> pd.DataFrame:
        """Attention mass by (query POS, key POS); `hide_special` first drops the tokenizer's
        special tokens and renormalises each row, as the map views do."""
        from qvka_core.analysis import pos

        run = self.runs[label]
        tags = pos.align_pos(run.offsets, pos.tag_words(text))
        m = self.map(label)
        if hide_special and any(run.special) and not all(run.special):
            m, tags = stats.drop_tokens(m, tags, [not x for x in run.special])
        return pos.pos_pair_matrix(m, tags)


def explore(
    models: Mapping[str, LoadedLike],
    text: str,
    layer: int = 0,
    head: int | None = None,
    *,
    run: Callable[[str, LoadedLike, str], VariantRun] | None = None,
) -> ExplorerResult:
    """Run every model once on `text` (through `run`, e.g. a cached wrapper keyed by label)
    and select `layer` / `head` for the views. Raises LabError for user mistakes."""
    if not models:
        raise LabError("choose at least one variant")
    runner = run or (lambda _label, loaded, t: run_model(loaded, t))
    runs = {label: runner(label, loaded, text) for label, loaded in models.items()}
    n_layers = min(len(r.attentions) for r in runs.values())
    n_heads = min(r.attentions[0].shape[0] for r in runs.values())
    if not 0 <= layer < n_layers:
        raise LabError(f"layer {layer} out of range: the models have {n_layers} layers")
    if head is not None and not 0 <= head < n_heads:
        raise LabError(f"head {head} out of range: the models have {n_heads} heads")
    return ExplorerResult(runs=runs, layer=layer, head=head)


def grouped_heads(groups: Sequence[Sequence[int]], shares: str = "KV"
                  ) -> list[tuple[str, list[int]]]:
    """[("KV head 0", [0, 1, 2, 3]), ...] where the heads of a group share `shares` (the
    spec's `shares`: "KV", "V", "latent"); one group covering every head is the shared one."""
    if len(groups) == 1 and len(groups[0]) > 1:
        return [(f"shared {shares} (all heads)", list(groups[0]))]
    if all(len(g) == 1 for g in groups):
        return [(f"head {g[0]} (own {shares})", list(g)) for g in groups]
    return [(f"{shares} head {i}", list(g)) for i, g in enumerate(groups)]
