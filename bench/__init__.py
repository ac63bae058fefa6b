"""Benchmarks, run as modules from the repository root: ``.venv/bin/python -m bench.negotiation``.

A regular package rather than a namespace one, so that no ``bench`` installed elsewhere
on the path can shadow it. Not shipped: setup.py names the packages it installs.
"""
