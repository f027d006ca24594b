"""Running the devstack with attestation: the enclave upstream (TLS) and its services (HTTP)."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from teegate.config import HttpLimits
from teegate.devstack._app import build_app
from teegate.devstack._config import DevstackConfig
from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._services import SimulatedAttestationServices
from teegate.devstack._services_app import build_services_app
from teegate.servers import run_servers, server

ROOT_CA_FILE = "root-ca.der"


def devstack_servers(
    config: DevstackConfig,
    *,
    enclave: SimulatedEnclave,
    host: str,
    port: int,
    services_port: int,
    tls_dir: Path,
    services_faults: frozenset[str] = frozenset(),
    http_limits: HttpLimits | None = None,
) -> tuple[uvicorn.Server, uvicorn.Server]:
    """(enclave upstream on https://host:port, services on http://host:services_port).

    `http_limits` bound the upstream's connections as `teegate serve`'s own (a bench
    raises them, so the upstream is never what limits a proxy under test).
    Writes the enclave's TLS files and the dev root CA (`root-ca.der`) to `tls_dir`,
    for a gateway in another process; run the servers with `run_servers`, alongside
    a gateway built with `enclave.root_ca_der` if it shares the process.
    """
    certfile, keyfile = enclave.write_tls_files(tls_dir)
    (tls_dir / ROOT_CA_FILE).write_bytes(enclave.root_ca_der)
    upstream = server(
        build_app(config, enclave=enclave),
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        ssl_context_factory=enclave.ssl_context_factory,
        http_limits=http_limits,
    )
    services = SimulatedAttestationServices(enclave, faults=services_faults)
    return upstream, server(build_services_app(services), host=host, port=services_port)


def serve_devstack(
    config: DevstackConfig,
    *,
    host: str,
    port: int,
    services_port: int,
    tls_dir: Path,
    services_faults: frozenset[str] = frozenset(),
) -> None:
    """Serve a new enclave upstream and its attestation services until interrupted."""
    run_servers(
        *devstack_servers(
            config,
            enclave=SimulatedEnclave(),
            host=host,
            port=port,
            services_port=services_port,
            tls_dir=tls_dir,
            services_faults=services_faults,
        )
    )
