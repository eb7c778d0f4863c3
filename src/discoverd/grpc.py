"""gRPC clients that resolve ``xds:///APPID`` through a discoverd node's xDS server.

* :func:`bootstrap` — the gRFC A27 bootstrap (a dict) naming the xDS server and this client's node:
  ``metadata.env`` selects the env whose instances it gets, ``locality.zone`` its own zone (those
  endpoints come first; other zones take over when it has none). Needs no grpcio.
* :func:`channel` — a ``grpc.aio`` channel to ``xds:///APPID``; grpcio is imported then, and only
  then (``pip install 'discoverd[grpc]'``).
* ``discoverd xds-bootstrap --xds HOST:PORT --env ENV --zone ZONE`` prints the bootstrap as JSON,
  for ``GRPC_XDS_BOOTSTRAP`` (a file) or ``GRPC_XDS_BOOTSTRAP_CONFIG`` (the JSON itself) — what grpc-go
  and grpcio read, whatever language the client is written in.

The one module of the package that imports ``grpc`` on the client side (the server's xDS server is
the other, and the two never import each other).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from discoverd.errors import ConfigError, MissingExtra

__all__ = ["add_bootstrap_command", "bootstrap", "bootstrap_command", "channel"]

BOOTSTRAP_VARS = ("GRPC_XDS_BOOTSTRAP", "GRPC_XDS_BOOTSTRAP_CONFIG")
"""The environment variables grpcio and grpc-go read the bootstrap from (a file, the JSON)."""
CALL_CREDS_VAR = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"
"""grpcio honours a bootstrap's ``call_creds`` only when this is ``true``."""


def bootstrap(
    xds: str,
    *,
    env: str,
    zone: str,
    region: str = "",
    node_id: str = "",
    ca_file: str = "",
    token_file: str = "",
) -> dict[str, Any]:
    """The bootstrap for a client of ``env`` in ``zone``, using the xDS server at ``xds`` (HOST:PORT).

    ``node_id`` defaults to ``discoverd-grpc@HOSTNAME``. With ``ca_file`` (PEM) the xDS server is
    reached over TLS, its certificate verified against that CA; otherwise in plain text.

    ``token_file`` (needs ``ca_file``: call credentials travel over TLS only) names a file holding the
    token for a node with read protection, sent as ``authorization: Bearer`` (gRFC A97 ``call_creds``).
    grpcio reads it only with ``GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true`` (:func:`channel` sets
    it) and only as a JWT (it reads the ``exp`` claim), so such clients need a JWT-shaped token.
    """
    if not xds or not env or not zone:
        raise ConfigError("an xDS bootstrap needs the server (HOST:PORT), the env and the zone")
    if token_file and not ca_file:
        raise ConfigError("a token needs TLS: give the CA file of the xDS server's certificate too")
    creds: dict[str, Any] = {"type": "insecure"}
    if ca_file:
        creds = {"type": "tls", "config": {"ca_certificate_file": ca_file}}
    server: dict[str, Any] = {"server_uri": xds, "channel_creds": [creds], "server_features": ["xds_v3"]}
    if token_file:
        server["call_creds"] = [{"type": "jwt_token_file", "config": {"jwt_token_file": token_file}}]
    return {
        "xds_servers": [server],
        "node": {
            "id": node_id or f"discoverd-grpc@{socket.gethostname()}",
            "locality": {"region": region, "zone": zone},
            "metadata": {"env": env},
        },
    }


def channel(
    appid: str,
    *,
    bootstrap: Mapping[str, Any] | None = None,
    credentials: Any = None,
    options: Sequence[tuple[str, Any]] = (),
) -> Any:
    """A ``grpc.aio`` channel to ``xds:///appid`` (the caller closes it: ``await ch.close()``).

    ``bootstrap`` is put in ``GRPC_XDS_BOOTSTRAP_CONFIG`` when neither bootstrap variable is set; an
    existing variable wins (grpcio reads the bootstrap once per process, when its first xDS channel
    opens). ``credentials`` (``grpc.ChannelCredentials``) make a secure channel to the endpoints.
    Raises :class:`~discoverd.errors.MissingExtra` (an ``ImportError``) naming the extra when grpcio
    is missing, :class:`ConfigError` when there is no bootstrap at all.
    """
    grpc = _import_grpc()
    if not any(os.environ.get(v) for v in BOOTSTRAP_VARS):
        if bootstrap is None:
            raise ConfigError("no xDS bootstrap: pass bootstrap=, or set GRPC_XDS_BOOTSTRAP(_CONFIG)")
        os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap)
        if any("call_creds" in server for server in bootstrap.get("xds_servers", ())):
            os.environ.setdefault(CALL_CREDS_VAR, "true")
    target = f"xds:///{appid}"
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=list(options))


def _import_grpc() -> Any:
    try:
        import grpc
        import grpc.aio
    except ImportError as exc:
        raise MissingExtra("grpcio", "grpc", "xds:/// channels (discoverd.grpc.channel)") from exc
    return grpc


# -- the command line --------------------------------------------------------------------------------


def add_bootstrap_command(sub: Any) -> None:
    """Add ``xds-bootstrap`` to the ``discoverd`` command's subparsers."""
    p = sub.add_parser("xds-bootstrap", help="print a gRPC xDS bootstrap (JSON) for xds:///APPID clients")
    p.add_argument("--xds", required=True, help="the node's xDS server HOST:PORT (its --xds)")
    p.add_argument("--env", required=True, help="the env whose instances the client gets")
    p.add_argument("--zone", required=True, help="the client's zone: its endpoints come first")
    p.add_argument("--region", default="", help="the client's region")
    p.add_argument("--node-id", default="", help="the client's node id (default discoverd-grpc@HOSTNAME)")
    p.add_argument("--ca-file", default="", help="PEM CA of the xDS server's certificate: use TLS")
    p.add_argument("--token-file", default="", help="file with a (JWT-shaped) token, with --ca-file")


def bootstrap_command(ns: argparse.Namespace) -> int:
    """Print the bootstrap of ``ns`` as JSON; 2 on a bad argument."""
    try:
        doc = bootstrap(
            ns.xds,
            env=ns.env,
            zone=ns.zone,
            region=ns.region,
            node_id=ns.node_id,
            ca_file=ns.ca_file,
            token_file=ns.token_file,
        )
    except ConfigError as exc:
        print(f"discoverd: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2))
    return 0
