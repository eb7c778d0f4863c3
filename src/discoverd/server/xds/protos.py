"""The generated Envoy v3 messages the xDS server uses, from the ``xds-protos`` package.

The one module of the package that imports ``envoy`` and ``google.protobuf`` (the layer checker
holds every other module to that), so the rest of the xDS server names messages from here. Importing
it loads protobuf and the Envoy descriptors (tens of milliseconds); only the xDS server does.

The generated classes carry no static types: they are re-exported as they are (``Any`` to mypy).
"""

from __future__ import annotations

from typing import Any, Final

from discoverd.errors import MissingExtra

try:
    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.core.v3.address_pb2 import Address, SocketAddress
    from envoy.config.core.v3.base_pb2 import Locality
    from envoy.config.core.v3.config_source_pb2 import AggregatedConfigSource, ApiVersion, ConfigSource
    from envoy.config.core.v3.health_check_pb2 import HealthStatus
    from envoy.config.endpoint.v3.endpoint_components_pb2 import Endpoint, LbEndpoint, LocalityLbEndpoints
    from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
    from envoy.config.listener.v3.api_listener_pb2 import ApiListener
    from envoy.config.listener.v3.listener_pb2 import Listener
    from envoy.config.route.v3.route_components_pb2 import Route, RouteAction, RouteMatch, VirtualHost
    from envoy.config.route.v3.route_pb2 import RouteConfiguration
    from envoy.extensions.filters.http.router.v3.router_pb2 import Router
    from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
        HttpConnectionManager,
        HttpFilter,
    )
    from envoy.service.discovery.v3 import ads_pb2
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
    from google.protobuf.any_pb2 import Any as AnyMessage
    from google.protobuf.wrappers_pb2 import UInt32Value
except ImportError as exc:  # xds-protos (the Envoy messages) or protobuf (their runtime) is missing
    _library = "protobuf" if (exc.name or "").startswith("google") else "xds-protos"
    raise MissingExtra(_library, "grpc", "the xDS server (discoverd serve --xds)") from exc

__all__ = [
    "ADS_METHOD",
    "CLUSTER",
    "ENDPOINTS",
    "LISTENER",
    "ROUTE",
    "Address",
    "AggregatedConfigSource",
    "AnyMessage",
    "ApiListener",
    "ApiVersion",
    "Cluster",
    "ClusterLoadAssignment",
    "ConfigSource",
    "DiscoveryRequest",
    "DiscoveryResponse",
    "Endpoint",
    "HealthStatus",
    "HttpConnectionManager",
    "HttpFilter",
    "LbEndpoint",
    "Listener",
    "Locality",
    "LocalityLbEndpoints",
    "Route",
    "RouteAction",
    "RouteConfiguration",
    "RouteMatch",
    "Router",
    "SocketAddress",
    "UInt32Value",
    "VirtualHost",
    "pack",
    "type_url",
]


def type_url(message_class: Any) -> str:
    """The ``type.googleapis.com/…`` URL of a message class (what ``Any`` and ``type_url`` carry)."""
    return f"type.googleapis.com/{message_class.DESCRIPTOR.full_name}"


def pack(message: Any) -> Any:
    """``message`` wrapped in a ``google.protobuf.Any``."""
    out = AnyMessage()
    out.Pack(message)
    return out


LISTENER: Final = type_url(Listener)
ROUTE: Final = type_url(RouteConfiguration)
CLUSTER: Final = type_url(Cluster)
ENDPOINTS: Final = type_url(ClusterLoadAssignment)

_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"]
ADS_METHOD: Final[tuple[str, str]] = (_SERVICE.full_name, "StreamAggregatedResources")
"""The ADS service's full name and its state-of-the-world method (what the gRPC server registers)."""
