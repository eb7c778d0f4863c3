"""Calling services by appid: the load-balancing caller and where its instances come from.

The layer between ``core`` (balancers, ejection: pure) and ``backends`` (registries), so that every
registry can make a caller (``registry.caller()``) and the client SDK can too (``client.caller()``):

* :mod:`~discoverd.calling.caller` — :class:`~discoverd.calling.caller.AsyncCaller`;
* :mod:`~discoverd.calling.callee` — per-callee settings, results, routes, relayed headers;
* :mod:`~discoverd.calling.source` — the ``InstanceSource`` protocol and the registry adapter;
* :mod:`~discoverd.calling.callers` — the callers of one registry, closed with it;
* :mod:`~discoverd.calling.http` — the HTTP client (the layer's one aiohttp wrapper);
* :mod:`~discoverd.calling.httpx_transport` — an ``httpx`` transport over a caller (optional ``httpx``).
"""
