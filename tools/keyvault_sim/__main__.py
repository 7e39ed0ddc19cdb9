"""CLI: serve a local Key Vault; prints the vault URL then the CA cert path on stdout, runs until signalled."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import DEFAULT_TENANT_ID, DEFAULT_TOKEN, LocalKeyVault


def _secret(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.keyvault_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--secret", type=_secret, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the only bearer token accepted")
    parser.add_argument("--tenant-id", default=DEFAULT_TENANT_ID, help="tenant announced in the 401 challenge")
    parser.add_argument("--log", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    vault = LocalKeyVault(
        args.host,
        args.port,
        accepted_token=args.token,
        tenant_id=args.tenant_id,
        log_stream=sys.stderr if args.log else None,
    )
    for name, value in args.secret:
        try:
            vault.set_secret(name, value)
        except ValueError as exc:
            parser.error(str(exc))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    url = vault.start()
    try:
        # Line-oriented on purpose: callers read exactly these two lines.
        print(url, flush=True)
        print(vault.ca_cert_path, flush=True)
        print(
            f"keyvault_sim: serving {len(args.secret)} secret(s); accepted token {args.token!r}; "
            "client needs verify_challenge_resource=False, connection_verify=<CA path>; Ctrl-C or SIGTERM stops",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        vault.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
