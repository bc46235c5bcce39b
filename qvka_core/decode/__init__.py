"""Decoding: greedy or sampled generation with the preallocated KV cache, measured per step.

    from qvka_core.decode import Sampling, generate, stream
    result = generate(load_checkpoint("austen-qv"), "It is a truth", 20, Sampling(0.8, seed=1))
"""

from qvka_core.decode.sampling import Sampling, choose, filtered_logits
from qvka_core.decode.stream import Decode, Step, check_request, generate, stream

__all__ = ["Decode", "Sampling", "Step", "check_request", "choose", "filtered_logits",
           "generate", "stream"]
