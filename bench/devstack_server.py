"""The paced upstream for the stream runs: teegate's devstack under uvicorn.

`teegate devstack` has `--chunk-delay-ms` but no way to set the completion
length, so this launcher builds the app itself:
`python -m bench.devstack_server --port P --chunk-delay-ms 5 --completion-tokens 198`.
"""

from __future__ import annotations

import argparse

from teegate import servers
from teegate.devstack import DevstackConfig, build_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay-ms", type=float, required=True)
    parser.add_argument("--completion-tokens", type=int, required=True)
    args = parser.parse_args()
    config = DevstackConfig(
        chunk_delay_s=args.chunk_delay_ms / 1000,
        completion_tokens=args.completion_tokens,
        first_token_delay_s=0.0,
    )
    servers.run_servers(servers.server(build_app(config), host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
