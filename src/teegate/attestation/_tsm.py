"""The gateway's own TDX quote, through Linux configfs-tsm.

In a TDX guest the kernel exposes report generation under
`/sys/kernel/config/tsm/report`: a process makes a directory there, writes 64 bytes
of report data to its `inblob`, reads the quote from `outblob`, and checks that
`generation` counts exactly its own write (another writer to the same entry would
make the quote someone else's). Outside a guest the directory is absent and the
gateway says it cannot attest itself.

Tests and the dev stack point `tsm_report_dir` at a plain directory served by
`teegate.devstack.SimulatedTsm`, which answers with quotes of the test PKI; a real
configfs entry answers at once, the simulated one a few milliseconds later, so
`outblob` is read until it is there.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from teegate.errors import NotAvailable, ServiceUnavailable

REPORT_DATA_RULE = "sha256(receipt_public_key) || nonce"
OUTBLOB_WAIT_S = 5.0


def gateway_report_data(receipt_public_key: bytes, nonce: bytes) -> bytes:
    """What the gateway's quote binds: its receipt key, and the client's fresh nonce."""
    if len(nonce) != 32:
        raise ValueError("the nonce must be 32 bytes")
    return hashlib.sha256(receipt_public_key).digest() + nonce


@dataclass(frozen=True, slots=True)
class TsmReport:
    provider: str
    quote: bytes


class ConfigfsTsm:
    """Quotes from one configfs-tsm report directory (blocking: run it in a thread)."""

    def __init__(self, root: Path, *, wait_s: float = OUTBLOB_WAIT_S) -> None:
        self.root = root
        self._wait_s = wait_s

    def __repr__(self) -> str:
        return f"ConfigfsTsm({str(self.root)!r})"

    @property
    def present(self) -> bool:
        return self.root.is_dir()

    def report(self, report_data: bytes) -> TsmReport:
        if len(report_data) != 64:
            raise ValueError("report_data must be 64 bytes")
        if not self.present:
            raise NotAvailable(
                "This gateway is not running in a TDX guest (no configfs-tsm report "
                f"directory at {self.root}): it cannot attest itself. Pin its receipt key."
            )
        entry = self.root / f"teegate-{secrets.token_hex(8)}"
        entry.mkdir()
        try:
            (entry / "inblob").write_bytes(report_data)
            quote = self._outblob(entry)
            generation = int((entry / "generation").read_text().strip())
            if generation != 1:
                raise ServiceUnavailable(
                    "another writer changed this quote request while it ran; ask again"
                )
            provider = (entry / "provider").read_text().strip()
            return TsmReport(provider, quote)
        finally:
            _remove(entry)

    def _outblob(self, entry: Path) -> bytes:
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                quote = (entry / "outblob").read_bytes()
            except FileNotFoundError:
                quote = b""
            if quote:
                return quote
            if time.monotonic() > deadline:
                raise ServiceUnavailable("the TDX module did not produce a quote in time")
            time.sleep(0.002)


def _remove(entry: Path) -> None:
    """configfs removes an entry's attributes with it; a plain directory needs them
    unlinked first."""
    try:
        entry.rmdir()
    except OSError:
        for child in entry.iterdir():
            child.unlink(missing_ok=True)
        entry.rmdir()
