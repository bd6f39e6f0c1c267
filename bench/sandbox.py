"""A sandbox Customer.io for benchmarks: counting mode, optional TLS (the SDK needs https).

``python -m bench.sandbox --port P --site-id S --api-key K [--write-key W] [--app-key A]
[--record count] [--app-send-rps N]``
"""

from __future__ import annotations

import argparse

from sandbox import SandboxConfig, serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--site-id", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--write-key", action="append", default=[], help="Pipelines write key")
    parser.add_argument("--app-key", action="append", default=[], help="App API key")
    parser.add_argument("--record", choices=("full", "count"), default="count")
    parser.add_argument(
        "--app-send-rps", type=int, default=100, help="App sends/s before a 429 (Customer.io: 100)"
    )
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    config = SandboxConfig(
        credentials={args.site_id: args.api_key},
        cdp_write_keys=frozenset(args.write_key),
        app_api_keys=frozenset(args.app_key),
        app_send_rps=args.app_send_rps,
        record=args.record,
        max_recorded_ops=10_000_000,
    )
    serve(config, "127.0.0.1", args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)


if __name__ == "__main__":
    main()
