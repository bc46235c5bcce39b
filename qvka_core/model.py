"""One transformer whose attention slot is filled from the variant registry.

Pre-norm (GPT-2, Llama) or post-norm (BERT); causal decoder or bidirectional encoder;
LayerNorm or RMSNorm; GELU or SwiGLU MLP; optional tied head, token types, embedding norm,
pooler. Module names follow HF where one exists so that checkpoint key tables stay short.

Notation: B batch, T tokens in this call, S cached + new positions, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qvka_core.attention import LayerCache, build_attention
from qvka_core.attention.kernels import Impl
from qvka_core.config import ConfigError, ModelConfig
from qvka_core.norms import make_norm
from qvka_core.positions import sinusoidal_table

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class MLP(nn.Module):
    """GELU MLP (up -> act -> down) or SwiGLU (down(act(gate) * up), Shazeer 2020)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, f, b = cfg.d_model, cfg.ffn_dim, cfg.mlp_bias
        self.act = _ACTIVATIONS[cfg.activation]
        self.gated = cfg.mlp == "swiglu"
        if self.gated:
            self.gate_proj = nn.Linear(d, f, bias=b)
        self.up_proj = nn.Linear(d, f, bias=b)
        self.down_proj = nn.Linear(f, d, bias=b)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.prenorm = cfg.prenorm
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias)
        self.attn = build_attention(cfg.attention)
        self.mlp_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None, cache: LayerCache | None,
                impl: Impl, return_weights: bool) -> tuple[Tensor, Tensor | None]:
        kw = dict(key_padding_mask=key_padding_mask, cache=cache, impl=impl,
                  return_weights=return_weights)
        if self.prenorm:
            a = self.attn(self.attn_norm(x), **kw)
            x = x + self.drop(a.out)
            x = x + self.drop(self.mlp(self.mlp_norm(x)))
        else:
            a = self.attn(x, **kw)
            x = self.attn_norm(x + self.drop(a.out))
            x = self.mlp_norm(x + self.drop(self.mlp(x)))
        return x, a.weights


@dataclass
class ModelOutput:
    logits: Tensor | None  # (B, T, V), None for a headless encoder
    hidden_states: Tensor  # (B, T, d_model), after the final norm
    attentions: list[Tensor] | None = None  # per layer (B, H, T, S)
    pooled: Tensor | None = None  # (B, d_model), BERT pooler


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        if cfg.position == "learned":
            self.pos_emb = nn.Embedding(cfg.max_seq_len, d)
        elif cfg.position == "sinusoidal":
            self.register_buffer(
                "pos_table", sinusoidal_table(cfg.max_seq_len, d), persistent=False
            )
        if cfg.type_vocab_size:
            self.type_emb = nn.Embedding(cfg.type_vocab_size, d)
        if cfg.embed_norm:
            self.embed_norm = make_norm(cfg.norm, d, cfg.norm_eps, cfg.norm_bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        if cfg.final_norm:
            self.final_norm = make_norm(cfg.norm, d, cfg.norm_eps, cfg.norm_bias)
        if cfg.lm_head:
            self.lm_head = nn.Linear(d, cfg.vocab_size, bias=cfg.lm_head_bias)
            if cfg.tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight
        if cfg.pooler:
            self.pooler = nn.Linear(d, d)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layers)."""
        std = 0.02
        tied_head = module is getattr(self, "lm_head", None) and self.cfg.tie_embeddings
        if isinstance(module, nn.Linear) and not tied_head:  # a tied head is the embedding
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding):
            # A token embedding scaled by sqrt(d) in `embed` (cfg.scales_embeddings) starts
            # at d^-1/2, so the scaled embedding has unit-variance entries.
            scaled = module is getattr(self, "tok_emb", None) and self.cfg.scales_embeddings
            nn.init.normal_(module.weight, 0.0, self.cfg.d_model**-0.5 if scaled else std)
        for name in ("o_proj", "down_proj"):
            sub = getattr(module, name, None)
            if isinstance(sub, nn.Linear):
                nn.init.normal_(sub.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
        k_weight = getattr(module, "k_weight", None)
        if isinstance(k_weight, nn.Parameter):
            nn.init.normal_(k_weight, 0.0, std)

    def new_cache(self, capacity: int | None = None) -> list[LayerCache]:
        """An empty KV cache, one entry per layer; `capacity` positions reserved per layer at
        the first write (prompt + new tokens for a decode), else grown by doubling."""
        return [LayerCache(capacity=capacity) for _ in self.layers]

    def embed(self, input_ids: Tensor, start: int, token_type_ids: Tensor | None) -> Tensor:
        t = input_ids.shape[1]
        if start + t > self.cfg.max_seq_len:
            raise ConfigError(
                f"sequence of {start + t} tokens exceeds max_seq_len ({self.cfg.max_seq_len})"
            )
        x = self.tok_emb(input_ids)  # (B, T, d)
        if self.cfg.scales_embeddings:
            # Vaswani et al. §3.4 (and OpenNMT, the paper's framework) scale embeddings by
            # sqrt(d) so that token identity is not drowned by the unit-amplitude sin/cos.
            x = x * math.sqrt(self.cfg.d_model)
        if self.cfg.position == "learned":
            x = x + self.pos_emb(torch.arange(start, start + t, device=input_ids.device))
        elif self.cfg.position == "sinusoidal":
            x = x + self.pos_table[start : start + t].to(x.dtype)
        if self.cfg.type_vocab_size:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.type_emb(types)
        if self.cfg.embed_norm:
            x = self.embed_norm(x)
        return self.drop(x)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        impl: Impl = "sdpa",
        return_attentions: bool = False,
    ) -> ModelOutput:
        """input_ids (B, T). attention_mask (B, S): 1 for real tokens (padding for encoders)."""
        start = cache[0].length if cache else 0
        x = self.embed(input_ids, start, token_type_ids)  # (B, T, d)
        attentions: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, key_padding_mask=attention_mask,
                         cache=cache[i] if cache else None, impl=impl,
                         return_weights=return_attentions)
            if w is not None:
                attentions.append(w)
        if self.cfg.final_norm:
            x = self.final_norm(x)
        logits = self.lm_head(x) if self.cfg.lm_head else None  # (B, T, V)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.cfg.pooler else None  # (B, d)
        return ModelOutput(logits=logits, hidden_states=x,
                           attentions=attentions if return_attentions else None, pooled=pooled)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 eos_id: int | None = None) -> Tensor:
        """Greedy (temperature 0) or sampled continuation, decoded with the KV cache."""
        if not self.cfg.causal:
            raise ConfigError("generate needs a causal model (attention.causal=True)")
        if max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        cache = self.new_cache(min(input_ids.shape[1] + max_new_tokens, self.cfg.max_seq_len))
        out = input_ids
        step_input = input_ids
        for _ in range(max_new_tokens):
            if out.shape[1] >= self.cfg.max_seq_len:
                break
            logits = self(step_input, cache=cache).logits[:, -1]  # (B, V)
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits.float(), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            out = torch.cat([out, nxt], dim=1)
            step_input = nxt
            if eos_id is not None and bool((nxt == eos_id).all()):
                break
        return out
