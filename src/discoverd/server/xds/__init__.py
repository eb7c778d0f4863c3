"""The xDS server of a node: Envoy v3 ADS over gRPC, so grpcio, grpc-go and Envoy resolve ``xds:///APPID``.

Modules (this package imports nothing on its own: grpcio and protobuf load only when the xDS server is
used, through ``discoverd.server.xds.server``):

* ``plan`` — the registry → endpoints mapping as plain data (pure: which instances, zones, priorities);
* ``protos`` — the generated Envoy messages (the one importer of ``envoy`` and ``google.protobuf``);
* ``resources`` — Listener, Cluster and ClusterLoadAssignment of an app, encoded once per change;
* ``streams`` — one ADS stream's state (node, subscriptions, versions, nonces, ACK/NACK) and the hub
  that pushes registry changes to the streams watching them;
* ``stats`` — the plain counts and client list for metrics and the dashboard;
* ``server`` — the ``grpc.aio`` server and the node's subscriber (the one importer of ``grpc``).
"""
