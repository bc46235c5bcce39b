"""Load an export with stock `transformers` (no remote code) and compare it with the lab model.

The probe is a fixed token sequence; logits (hidden states for an encoder) and every layer's
attention probabilities are compared in float32 with eager attention on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qvka_core.model import Transformer


@dataclass(frozen=True)
class Fidelity:
    stock_class: str
    tokens: int
    max_abs_logit_diff: float  # or hidden-state diff for an encoder
    max_abs_attention_diff: float
    same_greedy: bool  # argmax next token equal at every position (decoders)

    def line(self) -> str:
        what = "hidden state" if self.stock_class == "BertModel" else "logit"
        return (f"stock {self.stock_class} vs the lab model on {self.tokens} tokens (fp32, eager):"
                f" max |Δ{what}| {self.max_abs_logit_diff:.2e}, max |Δattention| "
                f"{self.max_abs_attention_diff:.2e}")


def probe_ids(vocab_size: int, length: int) -> torch.Tensor:
    """(1, T) deterministic token ids spread over the vocabulary."""
    return (torch.arange(length) * 7919 + 13).remainder(vocab_size)[None]  # (1, T)


def stock_model(directory: Path, task: str):
    """The stock class from `directory`, fp32, eager attention, eval mode."""
    import transformers
    from transformers.utils import logging

    cls = getattr(transformers, task)
    logging.disable_progress_bar()  # one line of output per export, not a progress bar
    try:
        return cls.from_pretrained(str(directory), attn_implementation="eager",
                                   dtype=torch.float32).eval()
    finally:
        logging.enable_progress_bar()


@torch.no_grad()
def compare(lab: Transformer, directory: Path, task: str, length: int = 24) -> Fidelity:
    stock = stock_model(directory, task)
    ids = probe_ids(lab.cfg.vocab_size, min(length, lab.cfg.max_seq_len))
    was_training = lab.training
    mine = lab.eval()(ids, impl="eager", return_attentions=True)
    lab.train(was_training)  # the caller's model is left as it was
    theirs = stock(input_ids=ids, output_attentions=True)
    if lab.cfg.lm_head:
        ours_out, their_out = mine.logits, theirs.logits
    else:
        ours_out, their_out = mine.hidden_states, theirs.last_hidden_state
    d_out = (ours_out - their_out).abs().max().item()  # (1, T, V) or (1, T, d)
    d_att = max((a - b).abs().max().item()
                for a, b in zip(mine.attentions, theirs.attentions, strict=True))
    same = bool((ours_out.argmax(-1) == their_out.argmax(-1)).all()) if lab.cfg.lm_head else True
    return Fidelity(stock_class=type(stock).__name__, tokens=ids.shape[1],
                    max_abs_logit_diff=d_out, max_abs_attention_diff=d_att, same_greedy=same)
