"""Token-by-token decoding with the KV cache, measured as it goes.

Each step reports the token, the model's top-5 next-token probabilities, the bytes the
cache holds (measured from its buffers' filled extent) beside the accounting formula's
value for the same positions, and the time spent so far. Prefill is step 0: the prompt goes
in, the first token comes out (its time is the time to first token). Time is counted only
while the generator computes, so decodes interleaved side by side (the Decode page steps
each variant in turn) do not charge each other's steps or the page's drawing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from qvka_core.accounting import kv_cache_bytes_per_token
from qvka_core.decode.sampling import Sampling, choose
from qvka_core.decode.text import PieceDecoder, candidate_label
from qvka_core.errors import ConfigError, DataError

TOP_K_SHOWN = 5
GREEDY = Sampling()
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Step:
    index: int  # 0 for the first new token
    token_id: int
    text: str  # what the token adds to the text ("" inside an unfinished character)
    top: list[tuple[str, float]]  # the model's 5 likeliest next tokens (temperature 1)
    positions: int  # positions in the cache when this token was chosen
    kv_bytes: int  # measured: bytes of the filled cache positions, all layers
    kv_bytes_formula: int  # accounting.kv_cache_bytes_per_token · positions
    elapsed_s: float  # time this decode has computed so far (not the consumer's, between steps)


@dataclass
class Decode:
    """A finished (or running) decode: its steps and timings."""

    prompt_tokens: int
    dtype: str
    steps: list[Step] = field(default_factory=list)
    stopped: str = ""  # "max_new_tokens" or "eos"

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def ttft_s(self) -> float | None:
        return self.steps[0].elapsed_s if self.steps else None

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token: (N - 1) / (t_N - t_1); None below 2 tokens."""
        if len(self.steps) < 2:
            return None
        span = self.steps[-1].elapsed_s - self.steps[0].elapsed_s
        return (len(self.steps) - 1) / span if span > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "new_tokens": [s.text for s in self.steps],
            "token_ids": [s.token_id for s in self.steps],
            "top5": [[[t, round(p, 6)] for t, p in s.top] for s in self.steps],
            "kv_cache_bytes": [s.kv_bytes for s in self.steps],
            "kv_cache_bytes_formula": [s.kv_bytes_formula for s in self.steps],
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + len(self.steps),
            "stopped": self.stopped,
            "dtype": self.dtype,
            "tokens_per_s": self.tokens_per_s,
            "ttft_s": self.ttft_s,
        }


def check_request(loaded: Any, prompt: str, max_new_tokens: int) -> list[int]:
    """The prompt's ids, after checking the model decodes and the request fits its positions."""
    cfg = loaded.config
    if not cfg.causal or not cfg.lm_head:
        raise ConfigError(f"{loaded.name} is an encoder (bidirectional attention, no LM head): "
                          "it cannot generate text; choose a causal model")
    if loaded.tokenizer is None:
        raise DataError(f"{loaded.name} has no tokenizer, so a prompt cannot be encoded")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not prompt.strip():
        raise DataError("the prompt is empty; type some text to continue")
    ids = loaded.tokenizer.encode(prompt).ids
    if not ids:
        raise DataError("the prompt encodes to zero tokens")
    if len(ids) + max_new_tokens > cfg.max_seq_len:
        raise DataError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) = "
                        f"{len(ids) + max_new_tokens} exceeds {loaded.name}'s "
                        f"{cfg.max_seq_len} positions (max_seq_len)")
    return ids


def dtype_name(model: torch.nn.Module) -> str:
    dtype = next(model.parameters()).dtype
    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"decoding supports {', '.join(DTYPE_NAMES.values())} weights, "
                          f"not {dtype}")
    return DTYPE_NAMES[dtype]


@torch.no_grad()
def stream(loaded: Any, prompt: str, max_new_tokens: int, sampling: Sampling = GREEDY,
           *, stop_at_eos: bool = True, decode: Decode | None = None) -> Iterator[Step]:
    """Yield one `Step` per new token; `decode` (if given) collects them and the stop reason."""
    ids = check_request(loaded, prompt, max_new_tokens)
    model, tok = loaded.model, loaded.tokenizer
    dtype = dtype_name(model)
    per_token = kv_cache_bytes_per_token(loaded.config, dtype)
    device = next(model.parameters()).device
    eos = tok.eos_id if stop_at_eos else None
    record = decode if decode is not None else Decode(len(ids), dtype)
    record.prompt_tokens, record.dtype = len(ids), dtype
    pieces = PieceDecoder(tok, ids)
    generator = sampling.generator(device)
    cache = model.new_cache(len(ids) + max_new_tokens)  # allocated once per layer
    step_input = torch.tensor([ids], device=device)  # (1, P) prompt, then (1, 1) per step
    busy = 0.0
    record.stopped = "max_new_tokens"
    for index in range(max_new_tokens):
        start = time.perf_counter()
        logits = model(step_input, cache=cache).logits[:, -1]  # (1, V)
        nxt = choose(logits, sampling, generator)  # (1, 1)
        token_id = int(nxt)  # reads back from the device: the step is done
        if token_id == eos:
            record.stopped = "eos"
            break
        probs = torch.softmax(logits[0].float(), dim=-1)  # (V,)
        top = torch.topk(probs, min(TOP_K_SHOWN, probs.shape[0]))
        positions = cache[0].length
        step = Step(
            index=index, token_id=token_id, text=pieces.push(token_id),
            top=[(candidate_label(tok, int(i)), float(p))
                 for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
            positions=positions, kv_bytes=sum(c.nbytes for c in cache),
            kv_bytes_formula=per_token * positions,
            elapsed_s=busy + time.perf_counter() - start,
        )
        busy = step.elapsed_s
        record.steps.append(step)
        yield step
        step_input = nxt
    tail = pieces.flush()
    if tail and record.steps:  # an unfinished character at the end: show what there is
        last = record.steps[-1]
        record.steps[-1] = Step(**{**last.__dict__, "text": last.text + tail})


def generate(loaded: Any, prompt: str, max_new_tokens: int, sampling: Sampling = GREEDY,
             *, stop_at_eos: bool = True) -> Decode:
    """Run `stream` to the end and return the whole decode."""
    record = Decode(0, "")
    for _ in stream(loaded, prompt, max_new_tokens, sampling, stop_at_eos=stop_at_eos,
                    decode=record):
        pass
    return record
