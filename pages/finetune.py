"""Fine-tune: launch runs (one per variant, same budget), watch them train, manage them.
Everything is read back from the runs folder, so the page can be closed and reopened."""

from __future__ import annotations

import streamlit as st

import qvka_app.shared as ui
from qvka_app import run_actions, runinfo
from qvka_app import runs as ar
from qvka_app import runs_view as arv
from qvka_app.option_widgets import option_widgets
from qvka_app.sources import checkpoint_choices
from qvka_core import jobs
from qvka_core.jobs import runs_root
from qvka_core.variants.registry import available_variants

ui.page_setup()
st.title("Fine-tune")
choices = checkpoint_choices()
pre = st.session_state.pop("ft_preselect", None)  # from Convert ("heal"): the base to use
if label := next((k for k, v in choices.items() if pre in (k, v)), None):
    st.session_state.update(ft_base_kind="checkpoint", ft_base=label, ft_variants=[])
statuses = jobs.list_jobs(runs_root())

with st.expander("New run", expanded=ar.form_open(bool(label), bool(statuses))):
    c1, c2, c3 = st.columns([1, 2, 2])
    kind = c1.radio("Base", ["checkpoint", "preset"], key="ft_base_kind",
                    help="checkpoint: fine-tune it (converted on load if the variant differs); "
                    "preset: train from scratch")
    options = list(choices) if kind == "checkpoint" else ar.PRESET_BASES
    if st.session_state.get("ft_base") not in options:
        st.session_state["ft_base"] = "austen-qv" if "austen-qv" in options else options[0]
    label = c2.selectbox("Model", options, key="ft_base")
    base = choices.get(label, label)
    ar.follow_base(kind, base)
    variants = c3.multiselect("Variants (trained side by side, same budget)",
                              available_variants(), key="ft_variants")
    d1, d2 = st.columns([1, 2])
    source = d1.radio("Data", ["Bundled Austen corpus", "Upload a .txt file"], key="ft_data")
    data = "austen"
    if source != "Bundled Austen corpus":
        up = d2.file_uploader(f"UTF-8 text, at most {ar.MAX_UPLOAD_BYTES // 2**20} MB",
                              type=["txt"], key="ft_upload")
        data = ""
        if up is not None:
            with ui.guarded(False):
                data = str(ar.stage_upload(up.name, up.getvalue()))
                d2.caption(f"validated: {up.size:,} bytes → {data}")
    e = st.columns(6)
    steps = int(e[0].number_input("Steps", 1, 1_000_000, 30, key="ft_steps"))
    batch = int(e[1].number_input("Batch", 1, 4096, 4, key="ft_batch"))
    seq_len = int(e[2].number_input("Sequence length", 8, 8192, 64, key="ft_seq"))
    lr = ar.lr_input(e[3], kind)
    seed = int(e[4].number_input("Seed", 0, 10_000, 0, key="ft_seed"))
    distill = e[5].toggle("Distil", key="ft_distill",
                          help="logit distillation; teacher = the unconverted source model")
    f1, f2, f3 = st.columns(3)
    device = f1.selectbox("Device", ["auto", "cpu", "cuda"], key="ft_device")
    n_gpus = int(f2.number_input("GPUs per run", 1, 64, 1, key="ft_gpus",
                                 disabled=device == "cpu"))
    prefix = f3.text_input("Name prefix", "ft", key="ft_name", max_chars=40)
    control = st.toggle("Control: also fine-tune the unconverted original, same budget",
                        key="ft_control", disabled=kind != "checkpoint",
                        help="how much of the recovery is only fine-tuning on this text")
    with st.expander("Variant options (empty: the variant's default)"):  # from the registry
        var_opts = option_widgets(variants, "ft")
    plans = []
    with ui.guarded(False):
        plans = ar.train_plans(base, kind == "checkpoint", variants, data=data or "austen",
                               steps=steps, batch=batch, seq_len=seq_len, lr=lr, seed=seed,
                               distill=distill, prefix=prefix, control=control,
                               options=var_opts)
        caption, warning = ar.estimate_lines(plans, device, n_gpus)
        st.caption(caption)
        if warning:
            st.warning(warning)
    if st.button("Launch", key="ft_launch", type="primary", disabled=not plans or not data):
        with ui.guarded(False):
            launched = ar.launch_once(plans, device, n_gpus)
            if launched is None:
                st.info("Already queued (the button was pressed twice).")
            else:
                st.session_state["ft_curves"] = [s["id"] for s in launched]
                st.success("Queued " + ", ".join(s["id"] for s in launched))
            statuses = jobs.list_jobs(runs_root())

if not statuses:
    st.info("No runs yet: launch one above. Runs live in " + str(runs_root()))
    st.stop()
poll = runinfo.poll_seconds(statuses)


@st.fragment(run_every=poll)
def live() -> None:
    """Progress, curves, log tail and the runs table; reruns every 1-2 s while a run is busy."""
    now = jobs.list_jobs(runs_root())
    ids = [s["id"] for s in now]
    for s in now:
        if s["state"] in jobs.ACTIVE:
            st.progress(*runinfo.progress_of(s))
    st.session_state.setdefault("ft_curves", ids[:3])
    st.session_state["ft_curves"] = [r for r in st.session_state["ft_curves"] if r in ids]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    picked = c1.multiselect("Curves", ids, key="ft_curves")
    share = c2.toggle("x = share of run", key="ft_curves_share",
                      help="Tokens seen / the run's total tokens, so runs of very different "
                      "lengths line up from 0 to 100 %")
    frame = arv.metrics_frame(picked)
    if frame.empty:
        st.caption("No metrics yet: the first point appears after start-up (a few seconds).")
    else:
        st.altair_chart(arv.loss_chart(arv.with_share(frame, now), "share") if share else
                        arv.loss_chart(frame), key="ft_chart", width="stretch")
    for g in runinfo.gpu_memory():
        st.caption(f"{g['gpu']}: {g['used_mib']:,} / {g['total_mib']:,} MiB in use")
    if picked:
        which = st.selectbox("Log of", picked, key="ft_log_run")
        st.code(jobs.log_tail(jobs.run_dir_of(which, runs_root()), 12) or "(empty)",
                language=None, wrap_lines=True)
    st.subheader("Runs")
    ui.table(arv.runs_table(now), key="ft_table", column_config=arv.COLUMN_WIDTHS)
    shown = next((s for s in now if s["id"] == st.session_state.get("ft_manage")), now[0])
    st.caption(arv.run_detail(shown))  # the run picked below, as live as the table
    recovery, notes = arv.recovery_frame(now)
    if not recovery.empty:
        st.caption("Recovery of converted models: validation loss / the original's loss "
                   "(1.0 = back to the original). A control fine-tunes the original itself "
                   "under the same budget: a healed run is judged against it, not against "
                   "1.0. " + "; ".join(notes))
        st.altair_chart(arv.recovery_chart(recovery), key="ft_recovery", width="stretch")
    if poll is not None and runinfo.poll_seconds(now) != poll:
        st.rerun(scope="app")  # started, or all finished and exited: new pace, fresh actions


live()
run_actions.manage(statuses)
