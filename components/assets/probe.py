#!/usr/bin/env python3
"""Health probe for a model server that requires client certificates (runs as an exec probe in the pod).

kubelet's HTTP(S) probes present no client certificate, so they fail against an mTLS-only server. This probe calls
`https://127.0.0.1:<port><path>` presenting the pod's own certificate and verifying the server against the platform
CA. Without --cert it makes a plain HTTP request. Exit 0 on HTTP 200, 1 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys


def probe(port: int, path: str, cert: str | None, key: str | None, ca: str | None, timeout: float) -> int:
    if cert:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(certfile=cert, keyfile=key)
        # The certificate is issued for the Service name, not 127.0.0.1; the CA still authenticates the server.
        context.check_hostname = False
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=timeout
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, ssl.SSLError) as exc:
        print(f"probe {path} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status != 200:
        print(f"probe {path} returned HTTP {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe a local HTTP(S) endpoint, presenting a client certificate.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    return probe(args.port, args.path, args.cert, args.key, args.ca, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
