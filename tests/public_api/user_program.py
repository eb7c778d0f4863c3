"""A typed program written the way a user writes one: only names from the top level of ``discoverd``.

``mypy --strict`` checks it with the rest of the tests (``make typecheck``);
``tests/public_api/test_user_program.py`` runs it against a real node and checks that it imports
nothing but top-level names.
"""

from __future__ import annotations

import discoverd
from discoverd import (
    AsyncClient,
    Balancer,
    CachedRegistry,
    Client,
    ClientConfig,
    DiscoverdError,
    Event,
    Instance,
    NoInstance,
    NotFound,
    Registry,
    Status,
    SyncRegistry,
    make_balancer,
    open_registry,
)


def instance(appid: str, hostname: str, port: int) -> Instance:
    """An instance of ``appid`` in the dev env."""
    return Instance(
        zone="sh001", env="dev", appid=appid, hostname=hostname, addrs=[f"http://10.0.0.1:{port}"]
    )


async def provide_and_consume(nodes: list[str]) -> tuple[list[str], list[str]]:
    """Register ``demo.api`` through the async client, read it back, then take it out of traffic.

    Returns the addresses fetched while UP, and the hostnames still UP after ``Status.WAITING``.
    """
    config = ClientConfig(renew_interval=5.0)
    async with AsyncClient(nodes, env="dev", zone="sh001", hostname="pod-1", config=config) as client:
        reg = await client.register("demo.api", ["http://10.0.0.1:8000"], metadata={"weight": "10"})
        up = [addr for ins in await client.fetch("demo.api") for addr in ins.addrs]
        await reg.set(status=Status.WAITING)
        waiting = await client.fetch("demo.api", status=Status.ALL)
        await reg.close()
        return up, [i.hostname for i in waiting if i.status == Status.UP]


def sync_client_fetch(nodes: list[str]) -> int:
    """Register through the synchronous client; the number of instances a fetch then sees."""
    with Client(nodes, env="dev", zone="sh001", hostname="pod-2") as client:
        reg = client.register("demo.sync", ["http://10.0.0.2:8000"])
        try:
            return len(client.fetch("demo.sync"))
        finally:
            reg.close()


async def watch_memory_registry() -> list[str]:
    """The go-micro-style interface over the embedded registry, behind the cache: the actions seen."""
    registry: Registry = open_registry("memory://")
    async with CachedRegistry(registry, ttl=30.0, own=True) as cached:
        events = cached.watch("demo.watch")
        await cached.register(instance("demo.watch", "h1", 1))
        first: Event = await anext(events)
        await cached.deregister(instance("demo.watch", "h1", 1))
        second: Event = await anext(events)
        await events.aclose()
        return [first.action.value, second.action.value]


def balance(instances: list[Instance]) -> str:
    """Pick with the default balancer, report the call; the picked hostname."""
    balancer: Balancer = make_balancer("least-used")
    picked = balancer.pick(instances)
    balancer.report(picked, ok=True, latency=0.01)
    return picked.hostname


def sync_registry_services() -> list[str]:
    """The synchronous facade of the registry interface."""
    with SyncRegistry("memory://") as registry:
        registry.register(instance("demo.svc", "h1", 1))
        return registry.list_services()


def classify(error: Exception) -> str:
    """How a user branches on discoverd's errors."""
    if isinstance(error, NotFound):
        return "not found"
    if isinstance(error, NoInstance):
        return "no instance"
    if isinstance(error, DiscoverdError):
        return "discoverd"
    return "other"


def version() -> str:
    """The installed version, from the package metadata."""
    return discoverd.__version__
