"""Command line: run the Klaviyo simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields

from .server import KlaviyoSimulator
from .state import ALL_SCOPES, SimulatorConfig

_NOT_FLOATS = {"rate_limits", "rate_limit_headers", "seed", "keep_attributes", "fast_import"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.klaviyo_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--api-key", action="append", default=[], metavar="KEY", help="accept this private key (repeatable)"
    )
    parser.add_argument(
        "--scopes",
        default=",".join(sorted(ALL_SCOPES)),
        help="comma-separated scopes of every --api-key (default: all)",
    )
    parser.add_argument("--account", default="default", help="account of the keys and lists given here")
    parser.add_argument(
        "--list", action="append", default=[], metavar="ID[:NAME]", help="create this list (repeatable)"
    )
    parser.add_argument("--no-rate-limits", action="store_true", help="do not enforce Klaviyo's rate limits")
    parser.add_argument(
        "--no-rate-limit-headers",
        action="store_true",
        help="answer without RateLimit-* headers, as behind a proxy that strips them (429s keep Retry-After)",
    )
    parser.add_argument(
        "--no-profile-attributes",
        action="store_true",
        help="keep only profiles' identifiers (list members still counted exactly): for runs of millions",
    )
    parser.add_argument(
        "--fast-import",
        action="store_true",
        help="read import jobs by a scan for emails, without validating profiles: for benchmarks only",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--log-level", default="WARNING")
    defaults = SimulatorConfig()
    for setting in fields(SimulatorConfig):
        if setting.name not in _NOT_FLOATS:
            flag = "--" + setting.name.replace("_", "-")
            parser.add_argument(flag, type=float, default=getattr(defaults, setting.name), dest=setting.name)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Parsing a 10,000-profile body allocates ~50,000 containers, and millions of stored profiles sit
    # in a few huge lists and dicts: default thresholds collect dozens of times per request, and full
    # collections walk every stored profile. Stored profiles form no cycles, so full ones are made rare.
    gc.set_threshold(200_000, 20, 1_000_000)
    settings = {s.name: getattr(args, s.name) for s in fields(SimulatorConfig) if s.name not in _NOT_FLOATS}
    try:
        config = SimulatorConfig(
            rate_limits=not args.no_rate_limits,
            rate_limit_headers=not args.no_rate_limit_headers,
            seed=args.seed,
            keep_attributes=not args.no_profile_attributes,
            fast_import=args.fast_import,
            **settings,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    simulator = KlaviyoSimulator(config, host=args.host, port=args.port)
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    for key in args.api_key:
        simulator.add_api_key(key, scopes, args.account)
    for spec in args.list:
        list_id, _, name = spec.partition(":")
        simulator.create_list(name or list_id, args.account, list_id)

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    url = simulator.start()
    print(f"Klaviyo simulator listening on {url}", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
