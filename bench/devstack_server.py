"""The bench's upstream enclave: teegate's devstack, over TLS, with its attestation services.

`teegate devstack` has `--chunk-delay-ms` but no way to set the completion
length, so this launcher builds the app itself. It always runs a fresh
`SimulatedEnclave` the way `teegate dev` does (`devstack_servers`): the upstream
on https://127.0.0.1:PORT with the enclave's self-signed certificate, evidence
on `/v1/attestation/report`, and the Intel PCS / NVIDIA NRAS stand-ins on
http://127.0.0.1:SERVICES_PORT. The enclave's certificate, key and dev root CA
land in TLS_DIR, for nginx (same key), the proxies (the certificate as their CA
file) and teegate (the root CA its verifier trusts):

    python -m bench.devstack_server --port P --services-port S --tls-dir DIR \
        --chunk-delay-ms 5 --completion-tokens 198
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import ENCLAVE_FILES
from teegate import servers
from teegate.config import HttpLimits
from teegate.devstack import DevstackConfig, SimulatedEnclave, devstack_servers

UPSTREAM_MAX_CONNECTIONS = 65_536
"""Above any open-stream count the bench asks for: with the default cap (4,096) every
proxy's streams past it were the upstream's 503s, not the proxy's."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--services-port", type=int, required=True)
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--chunk-delay-ms", type=float, required=True)
    parser.add_argument("--completion-tokens", type=int, required=True)
    args = parser.parse_args()
    config = DevstackConfig(
        chunk_delay_s=args.chunk_delay_ms / 1000,
        completion_tokens=args.completion_tokens,
        first_token_delay_s=0.0,
    )
    upstream, services = devstack_servers(
        config,
        enclave=SimulatedEnclave(),
        host="127.0.0.1",
        port=args.port,
        services_port=args.services_port,
        tls_dir=args.tls_dir,
        http_limits=HttpLimits(max_connections=UPSTREAM_MAX_CONNECTIONS),
    )
    _check_files(args.tls_dir)
    servers.run_servers(upstream, services)


def _check_files(tls_dir: Path) -> None:
    """The bench reads these names from other processes: fail here, by name, if the
    devstack ever writes its TLS files under others."""
    missing = [name for name in ENCLAVE_FILES if not (tls_dir / name).is_file()]
    if missing:
        raise SystemExit(f"devstack_servers did not write {', '.join(missing)} to {tls_dir}")


if __name__ == "__main__":
    main()
