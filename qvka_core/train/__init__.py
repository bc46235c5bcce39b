"""Training engine: one resumable, DDP-capable runner for pre-training and fine-tuning.

    from qvka_core.train import TrainArgs, run
    result = run(TrainArgs(variant="qv", steps=300, out="runs", name="qv"), on_metrics=print)
"""

from qvka_core.train.args import TrainArgs
from qvka_core.train.bundled import BUNDLED, austen_config
from qvka_core.train.engine import RunResult, run
from qvka_core.train.rundir import read_metrics, read_status, request_cancel

__all__ = ["BUNDLED", "RunResult", "TrainArgs", "austen_config", "read_metrics", "read_status",
           "request_cancel", "run"]
