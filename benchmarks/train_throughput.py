"""Training throughput: the lab's runner vs a plain nanoGPT-style loop, side by side.

    .venv/bin/python benchmarks/train_throughput.py [--steps 60] [--rounds 3] [--threads 2]

Both train the same model dims (the bundled "austen" preset: d 128, 4 heads, 2 layers, FFN 512,
vocab 4096, learned positions, tied head) on the same Austen token stream with AdamW and the
same batch. The plain loop is written here: its own pre-norm blocks with
`F.scaled_dot_product_attention(is_causal=True)`, nothing else. Rounds alternate runner,
plain, runner, plain... in one process so machine contention hits both alike. The runner's
rate is taken from its metrics' `elapsed_s` between two logged steps after warm-up, so it
includes everything the runner does per step (batch sampling, loss sync, cancel check,
metrics fsync) except the evaluation at the end. Prints tokens/s and the ratio runner/plain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from qvka_core.data import batch_generator, load_tokenizer, random_windows, token_data  # noqa: E402
from qvka_core.train import TrainArgs, run  # noqa: E402


class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.up, self.down = nn.Linear(d, ffn, bias=False), nn.Linear(ffn, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)  # (B, T, d) each
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, d: int = 128, heads: int = 4, layers: int = 2,
                 ffn: int = 512, seq: int = 128) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(PlainBlock(d, heads, ffn) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))  # (B, T, V)


def plain_rate(train: Tensor, vocab: int, steps: int, batch: int, seq: int, warm: int) -> float:
    torch.manual_seed(0)
    model = PlainGPT(vocab, seq=seq)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    t0 = 0.0
    for s in range(1, steps + 1):
        if s == warm + 1:
            t0 = time.perf_counter()
        x, y = random_windows(train, batch, seq, batch_generator(0, s))
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()  # a real loop looks at its loss
    return (steps - warm) * batch * seq / (time.perf_counter() - t0)


def runner_rate(out: Path, steps: int, batch: int, seq: int, warm: int, i: int) -> float:
    args = TrainArgs(preset="austen", variant="mha", position="learned", steps=steps,
                     batch=batch, seq_len=seq, warmup=5, eval_every=steps, eval_batches=1,
                     log_every=warm, checkpoint_every=0, device="cpu", out=str(out),
                     name=f"bench-{i}")
    metrics = {m["step"]: m for m in run(args).metrics}
    last = (steps // warm - 1) * warm  # last logged step before the final (evaluated) one
    dt = metrics[last]["elapsed_s"] - metrics[warm]["elapsed_s"]
    return (last - warm) * batch * seq / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warm = 10
    data = token_data("austen", load_tokenizer(), tokenizer_key="bench")
    runner, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            runner.append(runner_rate(Path(tmp), args.steps, args.batch, args.seq_len, warm, i))
            plain.append(plain_rate(data.train, data.vocab_size, args.steps, args.batch,
                                    args.seq_len, warm))
            print(f"round {i}: runner {runner[-1]:,.0f} tok/s   plain {plain[-1]:,.0f} tok/s",
                  flush=True)
    r, p = statistics.median(runner), statistics.median(plain)
    print(f"median: runner {r:,.0f} tok/s, plain nanoGPT loop {p:,.0f} tok/s, "
          f"ratio {r / p:.3f} (target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
