"""The app layer of QV-Ka Lab: everything the Streamlit pages (app.py, pages/*.py) need
between their widgets and qvka_core.

- Streamlit glue (caching, session state, forms turned into core calls, page kit):
  shared, routing, present, models, families, costs, hf_export, sources, runs, run_actions,
  navigation, explorer, decode, paper, home.
- View-models, which build tables and figures without Streamlit (tested without a server):
  explorer_views (the Explorer's figures), costs_view (the Costs page's tables and charts),
  runinfo (what a run or checkpoint is, read from disk), runs_view (the runs table and the
  loss and recovery charts).

qvka_core never imports this package (tests/test_layering.py); only this package, the pages
and app.py import streamlit.
"""
