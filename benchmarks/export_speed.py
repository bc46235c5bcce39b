"""PNG export of the Explorer's side-by-side view in presentation mode (six variants), three
exports in one process: kaleido's kept browser (what figures.to_image does) against one
browser started per export (kaleido's default, what the page did before).

    /usr/bin/time -v .venv/bin/python benchmarks/export_speed.py kept
    /usr/bin/time -v .venv/bin/python benchmarks/export_speed.py oneshot

Run the two in turn a few times (kept, oneshot, kept, ...) and compare their median wall
times, so machine noise hits both alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qvka_app import explorer_views as views  # noqa: E402
from qvka_core.analysis import figures  # noqa: E402
from qvka_core.analysis.explorer import explore, random_model  # noqa: E402

TEXT = "The old captain slowly told the young sailors a long story about storms."


def main(mode: str) -> None:
    models = {v: random_model(v) for v in ("mha", "gqa", "mqa", "mla", "qvka", "qv")}
    fig = views.side_by_side(explore(models, TEXT, layer=1),
                             views.ViewOptions(presentation=True))
    if mode == "oneshot":
        figures._SERVER.append(True)  # pretend it runs: to_image then starts none
    for _ in range(3):
        assert figures.to_image(fig, "png")[:4] == b"\x89PNG"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "kept")
