"""Issue 11's smaller views in Chromium: the Explorer's Difference tab matches heads (presentation
mode, 1280 x 720), and the Fine-tune page shows a calibrated estimate, a runs table without
"None" and curves of a short and a long run against each run's share of its tokens (1280 x 720
and 1920 wide). Screenshots go to test-output/views-*.png."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvka_core.jobs.store import atomic_write_json
from qvka_core.train.bundled import austen_config
from tests.e2e.conftest import serve_app_with_runs, settle

pytestmark = pytest.mark.browser
TIMEOUT = 180_000


def _finished_run(root: Path, name: str, steps: int, *, per_step_s: float,
                  start: float) -> None:
    """A completed from-checkpoint run as the trainer leaves it (no job.json: run directly)."""
    d = root / name
    d.mkdir()
    atomic_write_json(d / "status.json", {"state": "completed", "step": steps,
                                          "total_steps": steps, "message": f"{steps} steps"})
    atomic_write_json(d / "config.json", {
        "train": {"seq_len": 64, "batch": 4, "device": "cpu", "distill": "none",
                  "init": "austen-qv", "steps": steps},
        "model": austen_config().with_variant("qv").to_dict()})
    records = [{"step": s, "tokens": s * 256, "loss": start - s / (2 * steps),
                "val_loss": start + 0.1 - s / (2 * steps), "tokens_per_s": 256 / per_step_s,
                "elapsed_s": 2.0 + s * per_step_s} for s in range(0, steps + 1, max(1, steps // 5))]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def runs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    runs = tmp_path_factory.mktemp("views-runs")
    _finished_run(runs, "short", 10, per_step_s=0.5, start=4.3)
    _finished_run(runs, "long", 400, per_step_s=0.5, start=4.0)
    with serve_app_with_runs(runs) as url:
        yield url


def test_difference_tab_matches_heads_in_presentation_mode(runs_server: str, browser,
                                                           shots: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    page = ctx.new_page()
    page.goto(f"{runs_server}/explorer?family=random&variants=mha,gqa,qv&head=1&present=1",
              wait_until="domcontentloaded")
    page.get_by_role("tab", name="Difference").wait_for(timeout=TIMEOUT)
    settle(page, TIMEOUT)
    page.get_by_role("tab", name="Difference").click()
    page.get_by_text("Heads of independently trained models are not aligned").wait_for()
    page.get_by_text("Match heads by similarity", exact=True).click()
    settle(page, TIMEOUT)
    page.get_by_text("heads matched to a different index in B").wait_for(timeout=TIMEOUT)
    page.get_by_text("B's head", exact=False).first.wait_for()  # the matched map's title
    page.screenshot(path=str(shots / "views-difference-1280.png"))
    page.locator('[data-testid="stTable"]:visible').last.scroll_into_view_if_needed()  # large
    page.screenshot(path=str(shots / "views-difference-matched-1280.png"))
    page.get_by_role("tab", name="KV groups").click()
    page.get_by_text("gqa — layer 0: KV head 0").wait_for()  # the caption names the layer
    page.screenshot(path=str(shots / "views-kv-groups-1280.png"))
    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("query 0 left out").wait_for()
    cell = page.locator('[data-testid="stTable"]:visible td').last
    cell.scroll_into_view_if_needed()
    assert cell.evaluate("el => parseFloat(getComputedStyle(el).fontSize)") >= 20  # back row
    page.screenshot(path=str(shots / "views-statistics-1280.png"))
    ctx.close()


@pytest.mark.parametrize("width", [1280, 1920])
def test_finetune_runs_share_axis_table_and_estimate(runs_server: str, browser, shots: Path,
                                                     width: int) -> None:
    ctx = browser.new_context(viewport={"width": width, "height": 720})
    page = ctx.new_page()
    page.goto(f"{runs_server}/finetune", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Fine-tune").wait_for(timeout=TIMEOUT)
    settle(page, TIMEOUT)
    page.get_by_text("New run").click()  # the form is folded when runs exist
    page.get_by_text("calibrated on").first.wait_for(timeout=TIMEOUT)
    page.locator(".vega-embed svg").first.wait_for(timeout=TIMEOUT)  # both runs, by default
    page.get_by_text("x = share of run").click()
    settle(page, TIMEOUT)
    title = page.locator(".vega-embed svg text", has_text="share of the run's tokens")
    title.first.wait_for(timeout=TIMEOUT)
    ticks = page.locator(".vega-embed svg text").all_text_contents()
    assert "100%" in ticks and "0%" in ticks  # both runs end at 100 %, whatever their length
    page.locator(".vega-embed").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"views-finetune-curves-{width}.png"))
    page.locator('[data-testid="stDataFrame"]').first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / f"views-finetune-table-{width}.png"))
    ctx.close()
