"""teegate's benchmark: teegate vs a bare Python proxy vs LiteLLM, one run, one command.

`bench/run` (or `.venv/bin/python -m bench`) installs what it needs under
`bench/.work/`, runs every server side by side and writes `docs/performance.md`.
"""
