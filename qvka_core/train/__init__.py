"""Training engine: one resumable, DDP-capable runner for pre-training and fine-tuning.

    from qvka_core.train import TrainArgs, run
    result = run(TrainArgs(variant="qv", steps=300, out="runs", name="qv"), on_metrics=print)

Names are imported on first use (PEP 562): `qvka_core.train.args` (the run record) and
`qvka_core.train.flags` (its command-line form) load without torch.
"""

from __future__ import annotations

from qvka_core.lazy import lazy_exports

_EXPORTS = {
    "TrainArgs": "qvka_core.train.args",
    "BUNDLED": "qvka_core.train.bundled",
    "austen_config": "qvka_core.train.bundled",
    "RunResult": "qvka_core.train.engine",
    "run": "qvka_core.train.engine",
    "read_metrics": "qvka_core.train.rundir",
    "read_status": "qvka_core.train.rundir",
    "request_cancel": "qvka_core.train.rundir",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
