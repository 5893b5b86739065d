#!/usr/bin/env python3
"""Forward plain TCP on 127.0.0.1 to an mTLS server, presenting a client certificate (for tools without mTLS).

`vllm bench serve` can verify a server certificate but cannot present a client certificate; the benchmark Job runs
it against this local forwarder, which opens a TLS connection to the model server with the pod's client
certificate, verifying the server against the platform CA. It listens on loopback only. Standard library only.

Usage: tls_forward.py --listen 18000 --upstream vllm.llm-inference.svc:8000 --cert C --key K --ca CA
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


async def serve(listen: int, host: str, port: int, context: ssl.SSLContext, server_name: str | None) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_name or host
            )
        except (OSError, ssl.SSLError) as exc:
            print(f"tls_forward: cannot reach {host}:{port}: {exc}", file=sys.stderr, flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    print(f"tls_forward: 127.0.0.1:{listen} -> {host}:{port} (mTLS)", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward local plain TCP to an mTLS server.")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--server-name", help="name to verify in the server certificate (default: upstream host)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    try:
        asyncio.run(serve(args.listen, host, int(port), client_context(args.cert, args.key, args.ca), args.server_name))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
