"""The ``discoverd`` command line: ``serve``, and the client commands ``register``, ``fetch``,
``watch``, ``nodes``.

Flags use the names other tooling drives (``--addr``, ``--advertise``, ``--zone``, ``--region``,
``--env``, ``--hostname``, ``--nodes``, ``--poll-hold``, ``--evict-after``, ``--evict-interval``,
``--protect-threshold``, ``--enable-protect``, ``--log-level``, ``--config``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from discoverd.config import load_config
from discoverd.errors import ConfigError, MissingExtra

_SERVE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--addr", str, "listen address HOST:PORT (default 127.0.0.1:7171; port 0 = any free port)"),
    ("--advertise", str, "address announced to peers and clients (default: the bound --addr)"),
    ("--zone", str, "the node's zone (env ZONE, default zone01)"),
    ("--region", str, "the node's region (env REGION, default region01)"),
    ("--env", str, "deploy env, clients must use the same (env DEPLOY_ENV, default dev)"),
    ("--hostname", str, "the node's unique name (env HOSTNAME, default the OS hostname)"),
    ("--nodes", str, "own-zone nodes a:p,b:p, itself included (env DISCOVERY_NODES)"),
    ("--zones", str, "other zones' nodes: zone=a:p,b:p;zone2=c:p (TOML: a [zones] table)"),
    ("--data-dir", str, "directory for registry snapshots (restored at start); none by default"),
    ("--snapshot-interval", float, "seconds between snapshots (default 5)"),
    ("--replication-queue", int, "bound of each peer's replication queue (default 10000)"),
    ("--sync-timeout", float, "seconds start-up waits for peers' fetch/all (default 5)"),
    ("--poll-hold", float, "seconds a long poll is held before -304 (default 30)"),
    ("--evict-after", float, "seconds without renew before eviction (default 90)"),
    ("--evict-ceiling", float, "seconds without renew before eviction even in protect (3600)"),
    ("--evict-interval", float, "seconds between eviction passes / guard windows (default 60)"),
    ("--recount-interval", float, "seconds between guard recounts (default 900)"),
    ("--protect-threshold", float, "share of expected renews below which eviction stops (0.85)"),
    ("--protect-duration", float, "seconds of start-up protect with --enable-protect (default 60)"),
    ("--self-renew-interval", float, "seconds between renews of the own registration (30)"),
    ("--log-level", str, "debug, info, warning or error (default info)"),
    ("--log-format", str, "text (default) or json: one JSON object per log line"),
    ("--tokens-file", str, "file of access tokens, one TOKEN[:ROLE[:APPIDS]] per line (see README)"),
    ("--peer-secret", str, "shared secret peers present on replicated writes (required when set)"),
    ("--tls-cert", str, "PEM certificate chain: serve HTTPS (peers are reached over HTTPS too)"),
    ("--tls-key", str, "PEM private key for --tls-cert"),
    ("--tls-ca", str, "PEM CA bundle to verify peers' certificates (default: the system's)"),
    ("--max-conns-per-host", int, "connections of one client address allowed under pressure (512)"),
    ("--max-connections", int, "open client connections (default 0: from the fd limit)"),
    ("--header-timeout", float, "seconds to send a request's headers (default 10)"),
    ("--body-timeout", float, "seconds to send a request's body (default 30)"),
    ("--send-timeout", float, "seconds a client may leave answers unread (default 30)"),
    ("--max-pipeline", int, "requests read ahead of their answers per connection (default 16)"),
    ("--max-peers-per-zone", int, "peers taken from infra.discovery per zone (default 16)"),
    ("--max-peer-zones", int, "other zones replicated to (default 16)"),
    ("--max-label-values", int, "env/zone metric label values before 'other' (default 64)"),
    ("--xds", str, "serve xDS (gRPC ADS) on HOST:PORT, for grpcio/grpc-go/Envoy xds:/// (extra [grpc])"),
    ("--max-polls", int, "long polls held at once; more are answered -503 (default 100000)"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="discoverd", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a registry server node")
    serve.add_argument("--config", help="TOML file with the same settings (flag names, _ for -)")
    for flag, typ, help_ in _SERVE_FLAGS:
        serve.add_argument(flag, type=typ, default=None, help=help_)
    serve.add_argument(
        "--enable-protect",
        action="store_true",
        default=None,
        help="start in start-up protect: reads answer -500 until synced or --protect-duration",
    )
    serve.add_argument(
        "--token",
        dest="tokens",
        action="append",
        default=None,
        help="an access token TOKEN[:ROLE[:APPID,...]] (repeatable; ROLE admin|write|read, default admin)",
    )
    serve.add_argument(
        "--protect-reads", action="store_true", default=None, help="with tokens: reads need a token too"
    )
    serve.add_argument(
        "--no-dashboard", dest="dashboard", action="store_false", default=None, help="do not serve /"
    )
    serve.add_argument(
        "--access-log", action="store_true", default=None, help="log one line per answered request"
    )
    from discoverd.client.command_flags import add_client_commands

    add_client_commands(sub)
    from discoverd.grpc import add_bootstrap_command

    add_bootstrap_command(sub)
    return p


def _serve(ns: argparse.Namespace) -> int:
    """``discoverd serve``: 0 after a graceful stop (SIGTERM or SIGINT at any moment, start-up
    included), 1 when the node cannot start (one line on stderr; e.g. the ``[server]`` extra, or
    ``[grpc]`` for ``--xds``, is not installed), 2 for a bad configuration."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until the node's loop handles it
    try:
        return _serve_until_stopped(ns)
    except MissingExtra as exc:  # pip install 'discoverd[server]' (or [grpc]): said in one line
        print(f"discoverd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:  # exiting: a late signal must not interrupt the interpreter's own shutdown
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _serve_until_stopped(ns: argparse.Namespace) -> int:
    from discoverd.server.auth import preflight
    from discoverd.server.http_listen import ListenError
    from discoverd.server.runner import Node, serve_forever

    overrides = {k: v for k, v in vars(ns).items() if k not in {"command", "config"} and v is not None}
    try:
        config = load_config(toml_path=ns.config, overrides=overrides)
        preflight(config)  # bad token specs, certificates or CA: one line and exit 2, before binding
    except ConfigError as exc:
        print(f"discoverd: {exc}", file=sys.stderr)
        return 2
    from discoverd.server import logs

    try:
        logs.configure(config)  # text or JSON lines on stderr, at config.log_level
    except ConfigError as exc:
        print(f"discoverd: {exc}", file=sys.stderr)
        return 2

    def ready(node: Node) -> None:
        print(f"discoverd listening on {node.address}", flush=True)
        if node.xds_address:
            print(f"discoverd xds listening on {node.xds_address}", flush=True)

    try:
        serve_forever(config, on_ready=ready)
    except ListenError as exc:
        print(f"discoverd: cannot listen on {config.addr}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"discoverd: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``discoverd`` console script; returns the exit status."""
    ns = _parser().parse_args(argv)
    if ns.command == "serve":
        return _serve(ns)
    if ns.command == "xds-bootstrap":
        from discoverd.grpc import bootstrap_command

        return bootstrap_command(ns)
    from discoverd.client.commands import run_client_command

    return run_client_command(ns)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
