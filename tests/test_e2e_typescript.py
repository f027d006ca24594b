"""The npm `openai` package (TypeScript SDK) against the gateway: chat, stream, embeddings."""

from __future__ import annotations

from tests.support import node
from tests.support.gateway import EMBEDDING_MODEL, Devstack, Gateway, wait_for


def run_node_tests(gateway: Gateway, script: str) -> str:
    return node.run_node_tests(script, f"{gateway.url}/v1", gateway.key)


def test_typescript_sdk_chat_and_stream(gateway: Gateway) -> None:
    output = run_node_tests(gateway, "chat.test.mjs")
    assert "# pass 3" in output
    assert "# fail 0" in output


def test_typescript_sdk_embeddings(embeddings_rig: tuple[Gateway, Devstack]) -> None:
    gateway, upstream = embeddings_rig
    upstream.admin("POST", "reset")
    wait_for(gateway, lambda ids: EMBEDDING_MODEL in ids)
    output = run_node_tests(gateway, "embeddings.test.mjs")
    assert "# pass 3" in output
    assert "# fail 0" in output
    assert upstream.embeddings_requests() == 13  # 4 forms x 3 encodings, then dimensions
