"""A stand-in for Linux configfs-tsm, for a gateway that is not in a TDX guest.

A real TDX guest's `/sys/kernel/config/tsm/report/<entry>/outblob` is produced by
the kernel when read; here a thread watches a plain directory and, for each entry
whose `inblob` has been written, writes the `generation`, `provider` and `outblob`
a TDX guest would show, the quote signed by the test DCAP PKI (so dcap-qvl accepts
it against that PKI's root and collateral, and nothing else).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from teegate.devstack.tdx_pki import TdxTestPki

POLL_S = 0.002


class SimulatedTsm:
    def __init__(self, root: Path, pki: TdxTestPki) -> None:
        self.root = root
        self._pki = pki
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simulated-tsm", daemon=True)

    def __repr__(self) -> str:
        return f"SimulatedTsm({str(self.root)!r})"

    def __enter__(self) -> SimulatedTsm:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _serve(self) -> None:
        while not self._stop.wait(POLL_S):
            for entry in self.root.iterdir():
                with contextlib.suppress(OSError):  # removed by its reader meanwhile
                    self._answer(entry)

    def _answer(self, entry: Path) -> None:
        inblob, outblob = entry / "inblob", entry / "outblob"
        if not inblob.exists() or outblob.exists():
            return
        report_data = inblob.read_bytes()
        if len(report_data) != 64:
            return
        (entry / "generation").write_text("1\n")
        (entry / "provider").write_text("tdx_guest\n")
        partial = entry / ".outblob"
        partial.write_bytes(self._pki.quote(report_data))
        partial.replace(outblob)
