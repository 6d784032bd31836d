"""Reliability runs too long for `make test`.

Run each from the repository root: `.venv/bin/python -m reliability.NAME`.
"""
