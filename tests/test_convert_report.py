"""A conversion's fidelity report is judged on >= 4,096 held-out tokens of several texts,
with a paired standard error of the loss difference."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from qvka_core.checkpoints import load_checkpoint
from qvka_core.convert import convert
from qvka_core.convert.fidelity import held_out_windows


def test_report_uses_4096_tokens_of_several_novels_with_a_paired_se() -> None:
    loaded = load_checkpoint("austen-mha")
    out = convert(loaded, "qv", qv_fit="drop")
    rep = out.report
    assert rep.eval_tokens >= 4096 and rep.eval_windows >= 16
    assert len(rep.eval_texts) >= 2 and "novels" in rep.eval_source
    assert 0 < rep.js_eval_tokens < rep.eval_tokens  # maps on the first windows only
    assert sum(t["tokens"] for t in rep.eval_texts.values()) == rep.eval_tokens - rep.eval_windows
    # recompute each window's loss independently and the paired SE from scratch
    windows, _ = held_out_windows(None, loaded.tokenizer, vocab_size=loaded.config.vocab_size,
                                  max_seq_len=loaded.config.max_seq_len)
    assert len({name for name, _ in windows}) == len(rep.eval_texts)
    diffs = []
    with torch.no_grad():
        for _, ids in windows:
            x = ids[None]  # (1, T)
            la, lb = (float(F.cross_entropy(m(x).logits[0, :-1], x[0, 1:]))
                      for m in (loaded.model, out.model))
            diffs.append(lb - la)
    mean = sum(diffs) / len(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    assert rep.loss_diff_se is not None and rep.loss_diff_se > 0
    assert math.isclose(rep.loss_diff_se, se, rel_tol=1e-3)
    assert math.isclose(rep.loss_after - rep.loss_before, mean, rel_tol=1e-3, abs_tol=1e-4)
    assert "paired SE" in rep.summary()


def test_the_source_half_of_a_report_is_reused_only_for_the_same_weights_and_windows() -> None:
    """Converting one base to several variants runs the base once; a weight changed in place
    (or other windows) runs it again, and the report is the same either way."""
    from qvka_core.convert import fidelity

    loaded = load_checkpoint("austen-mha")
    source, target = loaded.model, convert(loaded, "qv", qv_fit="drop").model
    windows, _ = held_out_windows(None, loaded.tokenizer, vocab_size=loaded.config.vocab_size,
                                  max_seq_len=loaded.config.max_seq_len, max_tokens=1024)
    calls = []
    hook = source.register_forward_hook(lambda *a: calls.append(1))
    fidelity._MEMO.clear()
    first = fidelity.compare(source, target, windows)
    n_groups = len(calls)
    assert n_groups >= 1
    second = fidelity.compare(source, target, windows)
    assert len(calls) == n_groups  # reused: the source did not run again
    assert second == first
    with torch.no_grad():
        source.layers[0].attn.o_proj.weight.mul_(0.5)  # in place: same tensor, new version
    changed = fidelity.compare(source, target, windows)
    assert len(calls) == 2 * n_groups and changed["loss_before"] != first["loss_before"]
    fidelity.compare(source, target, windows[:2])
    hook.remove()
    assert len(calls) > 2 * n_groups  # other windows: computed anew
    fidelity._MEMO.clear()
    with torch.no_grad():
        fresh = fidelity.compare(source, target, windows)
    assert fresh == changed  # the memo never changes a number
