"""The Fine-tune page's actions on one run: cancel, resume, delete (confirmed), rename, open
in the Explorer beside the models it came from, and export to Hugging Face. An exiting
run's actions wait until its worker is gone (they would race it)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from qvka_app import navigation as nav
from qvka_app.hf_export import export_button, run_checkpoint
from qvka_app.shared import guarded
from qvka_core import jobs
from qvka_core.jobs import runs_root  # $QVKA_RUNS, else the checkout's runs/ (created)


def manage(statuses: list[dict[str, Any]]) -> None:
    """A run picker and the buttons that apply to the picked run's state."""
    m1, m2, m3, m4 = st.columns([2, 1, 1, 2])
    names = {s["id"]: s.get("name") or s["id"] for s in statuses}
    rid = m1.selectbox("Run", list(names), key="ft_manage", format_func=lambda r: (
        names[r] if names[r] == r else f"{names[r]} ({r})"))
    status = next(s for s in statuses if s["id"] == rid)
    if status["exiting"]:  # resume/delete would race the exiting worker
        st.caption(f"{rid} is {status['state']} and still shutting down; its actions appear in a "
                   "moment.")
    with guarded(False):
        if status["state"] in jobs.ACTIVE and m2.button("Cancel", key="ft_cancel"):
            jobs.cancel(rid, root=runs_root())
            st.rerun()
        idle = not status["exiting"]
        if status["resumable"] and idle and m2.button("Resume", key="ft_resume"):
            jobs.resume(rid, root=runs_root())
            st.rerun()
        if status["state"] not in jobs.ACTIVE and idle:
            if m3.button("Delete", key="ft_delete"):
                st.session_state["ft_confirm"] = rid
            if st.session_state.get("ft_confirm") == rid:
                st.warning(f"Delete {rid} and all its files?")
                if st.button("Yes, delete", key="ft_delete_yes", type="primary"):
                    st.session_state.pop("ft_confirm")
                    jobs.delete(rid, root=runs_root())
                    st.rerun()
        new = m4.text_input("Rename to", key="ft_rename_to")
        if new and m4.button("Rename", key="ft_rename"):
            jobs.rename(rid, new, root=runs_root())
            st.rerun()
        target = nav.run_explorer_target(status)
        e1, e2 = st.columns(2)
        if target and e1.button("Open in Explorer", key="ft_explorer", help=nav.EXPLORER_NOTE):
            nav.open_in_explorer(*target)
        export_button(run_checkpoint(rid), "ft_export", e2)
