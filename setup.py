"""The wheel's package list, found rather than listed: every package under qvka_core/ and
qvka_app/ (so a new variant package, qvka_core/variants/NAME/, ships with no edit here), plus
the three folders pyproject.toml maps into them (assets, pages, Streamlit settings).
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup

MAPPED = ["qvka_core._assets", "qvka_app.pages", "qvka_app._streamlit"]

setup(packages=find_packages(include=["qvka_core", "qvka_core.*", "qvka_app", "qvka_app.*"])
      + MAPPED)
