"""The flags of the client sub-commands of the CLI (``register``, ``fetch``, ``watch``, ``nodes``,
``call``); ``client/commands.py`` runs them.

Only ``argparse`` here: the ``discoverd`` command builds its whole parser before it knows the
sub-command, and ``discoverd serve`` must not import the client SDK (aiohttp, the registry backends).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", help="registry nodes a:p,b:p (env DISCOVERY_NODES, default 127.0.0.1:7171)")
    p.add_argument("--env", help="deploy env (env DEPLOY_ENV, default dev)")
    p.add_argument("--zone", help="zone (env ZONE, default zone01)")
    p.add_argument("--region", help="region (env REGION, default region01)")
    p.add_argument("--hostname", help="this client's / instance's hostname (env HOSTNAME)")
    p.add_argument("--start-timeout", type=float, default=10.0, help="seconds to find a node (10)")


def add_client_commands(sub: Any) -> None:
    reg = sub.add_parser("register", help="register an instance until Ctrl-C, then cancel it")
    reg.add_argument("appid")
    reg.add_argument("addrs", nargs="+", metavar="ADDR", help="scheme://host:port")
    reg.add_argument("--metadata", default=None, help='JSON object of strings, e.g. {"weight":"10"}')
    reg.add_argument("--version", default="")
    reg.add_argument("--status", type=int, default=1, help="1 UP (default) or 2 WAITING")
    fetch = sub.add_parser("fetch", help="print the instances of an app (JSON, one per line)")
    fetch.add_argument("appid")
    fetch.add_argument("--status", type=int, default=1, help="bitmask: 1 UP, 2 WAITING, 3 all")
    watch = sub.add_parser("watch", help="print the app's instance list on every change")
    watch.add_argument("appid")
    sub.add_parser("nodes", help="print the registry nodes of the zone")
    call = sub.add_parser("call", help="call APPID PATH on a balanced instance; prints the body")
    call.add_argument("appid")
    call.add_argument("path")
    call.add_argument("--method", default="GET")
    call.add_argument("--data", default=None, help="request body")
    call.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    call.add_argument("--timeout", type=float, default=10.0)
    call.add_argument(
        "--registry",
        default=None,
        metavar="URL",
        help="find APPID through this registry (redis://, gossip://, discoverd://...) instead of --nodes",
    )
    for p in (reg, fetch, watch, sub.choices["nodes"], call):
        add_client_flags(p)
