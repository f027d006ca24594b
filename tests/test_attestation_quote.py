"""Reading the TDX fields policy needs, with dcap-qvl's parser, from real Intel quotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.attestation import TDX_TEE_TYPE, parse_td_quote
from teegate.devstack.tdx_pki import TdxTestPki
from teegate.errors import AttestationFailed

FIXTURES = Path(__file__).parent / "fixtures" / "tdx"


def _fixture(name: str) -> bytes:
    raw = (FIXTURES / name).read_bytes()
    return bytes.fromhex(raw.decode().strip()) if name.endswith(".txt") else raw


def test_intel_v4_sample_fields() -> None:
    quote = parse_td_quote(_fixture("tdx_quote"))
    assert quote.version == 4
    assert quote.tee_type == TDX_TEE_TYPE
    assert quote.mr_td.hex().startswith("91eb2b44") and quote.mr_td.hex().endswith("18b7")
    assert quote.report_data.hex().startswith("9a9d48e7")
    assert quote.report_data.hex().endswith("523f20")
    assert not quote.debug


def test_intel_near_sample_fields() -> None:
    quote = parse_td_quote(_fixture("near_quote_hex.txt"))
    assert quote.mr_td.hex().startswith("f06dfda6")
    assert quote.rtmrs[3].hex().startswith("287a9242") and quote.rtmrs[3].hex().endswith("b7b3")
    assert quote.measurements()["rtmr3"] == quote.rtmrs[3].hex()


def test_intel_v5_td15_sample_parses() -> None:
    quote = parse_td_quote(_fixture("tdx_quote_outdated"))
    assert quote.version == 5
    assert len(quote.report_data) == 64


def test_sgx_quote_is_refused_as_not_tdx() -> None:
    with pytest.raises(AttestationFailed) as info:
        parse_td_quote(_fixture("sgx_quote"))
    assert info.value.check == "tee_type"


@pytest.mark.parametrize("raw", [b"", b"\x04\x00" * 10, b"\xff" * 700])
def test_garbage_is_a_format_failure(raw: bytes) -> None:
    with pytest.raises(AttestationFailed) as info:
        parse_td_quote(raw)
    assert info.value.check in {"quote_format", "tee_type"}


def test_oversized_quote_is_refused_before_parsing() -> None:
    with pytest.raises(AttestationFailed) as info:
        parse_td_quote(b"\0" * (1024 * 1024))
    assert info.value.check == "quote_format"


def test_debug_bit_is_read_from_td_attributes() -> None:
    pki = TdxTestPki()
    assert parse_td_quote(pki.quote(b"\0" * 64, debug=True)).debug
    assert not parse_td_quote(pki.quote(b"\0" * 64)).debug


def test_measurements_are_keyed_like_the_allow_list_file() -> None:
    quote = parse_td_quote(TdxTestPki().quote(b"\0" * 64, mr_td=b"\x11" * 48))
    assert list(quote.measurements()) == ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"]
    assert quote.measurements()["mrtd"] == "11" * 48
