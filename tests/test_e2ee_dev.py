"""End-to-end encryption through `teegate dev` as a user runs it (real processes): the
official SDK on `teegate.client` and on tinfoil-ehbp's bare transport, stream and
whole; a canary sent with `echo:` comes back to the client and is in no byte the
client↔gateway relay saw, no log line (the gateway logs at DEBUG) and no file the
demo wrote. The gateway↔enclave hop, inside its TLS, is checked in test_e2ee.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, cast

import httpx
import openai
from ehbp import EHBPTransport, ServerIdentity

import teegate.client
from teegate.client import VerifyPolicy
from tests.support.billing import TcpProxy, settled_generation
from tests.support.dev import running_dev

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"


def generation(base_url: str, key: str, request_id: str) -> dict[str, Any]:
    return settled_generation(base_url.removesuffix("/v1"), key, request_id)


def test_teegate_dev_serves_end_to_end_encrypted_chat(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()
    (directory / "debug.toml").write_text('log_level = "debug"\n')
    log = tmp_path / "dev.log"
    secret = f"CANARY-{secrets.token_hex(8)}"
    with running_dev(directory, log, "--config", str(directory / "debug.toml")) as demo:
        port = int(demo.base_url.removeprefix("http://127.0.0.1:").split("/")[0])
        relay = TcpProxy("127.0.0.1", port)
        try:
            relayed = f"http://127.0.0.1:{relay.port}/v1"
            root = (directory / ".teegate" / "devstack-tls" / "root-ca.der").read_bytes()
            client = teegate.client.connect(
                relayed, demo.key, model=V3, policy=VerifyPolicy(root_ca_der=root), max_retries=0
            )
            raw = client.chat.completions.with_raw_response.create(
                model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], max_tokens=16
            )
            assert raw.parse().choices[0].message.content == secret
            record = generation(demo.base_url, demo.key, raw.http_response.headers["x-request-id"])
            assert (record["settled_by"], record["status"]) == ("usage", "ok")

            stream = client.chat.completions.create(
                model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == secret

            # tinfoil-ehbp's own transport, the clear headers set by hand
            enclave = teegate.client.verify_enclave(
                relayed, demo.key, V3, VerifyPolicy(root_ca_der=root)
            )
            bare = openai.OpenAI(
                base_url=relayed,
                api_key=demo.key,
                http_client=cast(Any, httpx.Client(transport=EHBPTransport(enclave.identity()))),
                max_retries=0,
                default_headers={"X-TEE-Model": V3, "X-TEE-Max-Output-Tokens": "16"},
            )
            chunks = bare.chat.completions.create(
                model=V3,
                messages=[{"role": "user", "content": f"echo: {secret}"}],
                max_tokens=16,
                stream=True,
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == secret
            assert isinstance(enclave.identity(), ServerIdentity)
        finally:
            relay.close()
        assert secret.encode() not in relay.recorded
        assert b"ehbp-encapsulated-key" in relay.recorded.lower()
    logged = log.read_bytes()
    assert b"e2ee_relayed" in logged  # the gateway did log at DEBUG, about these requests
    assert secret.encode() not in logged
    for path in directory.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
