"""The fixed vocabulary the simulated model speaks: one word is one token."""

from __future__ import annotations

VOCABULARY: tuple[str, ...] = (
    "attested", "enclave", "secure", "model", "token", "quote", "measure", "trust",
    "sealed", "memory", "private", "verify", "answer", "signal", "river", "stone",
    "garden", "light", "window", "cloud", "north", "quiet", "bright", "swift",
    "harbor", "summit", "lantern", "meadow", "copper", "silver", "orbit", "canvas",
    "thread", "anchor", "prism", "signal", "ember", "glacier", "willow", "beacon",
    "compass", "falcon", "marble", "velvet", "cedar", "harvest", "voyage", "echo",
)  # fmt: skip
