"""The fields of a TDX quote that teegate's policy looks at, read with dcap-qvl's parser.

Parsing is not verifying: these values mean something only once `verify_tdx_quote`
has checked the quote's signature chain. The parser is dcap-qvl's own, so what the
policy reads is exactly what the verifier checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dcap_qvl

from teegate.attestation._check import rejects, summarize
from teegate.errors import AttestationFailed

__all__ = [
    "MAX_QUOTE_BYTES",
    "MEASUREMENT_NAMES",
    "TDX_TEE_TYPE",
    "TdQuote",
    "parse_td_quote",
]

TDX_TEE_TYPE = 0x81
#: Real TDX quotes with an embedded PCK chain are about 5 KiB; anything far larger is refused.
MAX_QUOTE_BYTES = 64 * 1024
MEASUREMENT_NAMES = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
_TD_ATTRIBUTES_DEBUG_BIT = 0x01  # TUD.DEBUG: bit 0 of the first (little-endian) byte


@dataclass(frozen=True, slots=True)
class TdQuote:
    """The header and TD report fields of a TDX quote (v4 TD 1.0 or v5 TD 1.5)."""

    version: int
    tee_type: int
    td_attributes: bytes
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    @property
    def debug(self) -> bool:
        """A debug TD lets the host read and change its memory: it proves nothing."""
        return bool(self.td_attributes[0] & _TD_ATTRIBUTES_DEBUG_BIT)

    def measurements(self) -> dict[str, str]:
        """MRTD and RTMR0-3 as lowercase hex, keyed like the measurements allow-list file."""
        values = (self.mr_td, *self.rtmrs)
        return {name: v.hex() for name, v in zip(MEASUREMENT_NAMES, values, strict=True)}


def parse_td_quote(raw: bytes) -> TdQuote:
    """Parse `raw` and insist it is a TDX quote (tee_type 0x81), before any crypto runs.

    dcap-qvl accepts SGX quotes too, and an SGX enclave report has no TD fields, so
    the TEE type is refused here rather than left to the verifier.
    """
    if not raw or len(raw) > MAX_QUOTE_BYTES:
        raise AttestationFailed("quote_format", f"quote is {len(raw)} bytes")
    parsed = _parse(raw)
    tee_type = int(parsed.header.tee_type)
    if tee_type != TDX_TEE_TYPE:
        raise AttestationFailed("tee_type", f"tee_type {tee_type:#x} is not TDX (0x81)")
    return _td_quote(parsed, tee_type)


def _parse(raw: bytes) -> Any:
    try:
        return dcap_qvl.parse_quote(raw)
    except BaseException as exc:  # a pyo3 panic derives from BaseException
        if not rejects(exc):
            raise
        raise AttestationFailed("quote_format", f"unparsable quote: {summarize(exc)}") from exc


def _td_quote(parsed: Any, tee_type: int) -> TdQuote:
    try:
        report = parsed.report
        rtmrs = (
            bytes(report.rt_mr0),
            bytes(report.rt_mr1),
            bytes(report.rt_mr2),
            bytes(report.rt_mr3),
        )
        quote = TdQuote(
            version=int(parsed.header.version),
            tee_type=tee_type,
            td_attributes=bytes(report.td_attributes),
            mr_td=bytes(report.mr_td),
            rtmrs=rtmrs,
            report_data=bytes(report.report_data),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise AttestationFailed("quote_format", "quote has no TD report") from exc
    if len(quote.report_data) != 64 or len(quote.td_attributes) != 8:
        raise AttestationFailed("quote_format", "TD report fields have the wrong size")
    return quote
