"""QV-Ka Lab: `streamlit run app.py` (or `./lab app`). The router is qvka_app/app.py."""

from pathlib import Path

from qvka_app.app import main

main(Path(__file__).parent)
