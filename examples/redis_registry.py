"""The Redis backend (``pip install 'discoverd[redis]'``): a provider and a consumer sharing one Redis.

Run: ``python examples/redis_registry.py redis://127.0.0.1:6379/15``. The provider registers with a
heartbeat; the consumer, a second registry object, sees it and then sees it leave.
"""

from __future__ import annotations

import asyncio
import sys

from discoverd import Instance, open_registry


async def main(url: str) -> None:
    provider = open_registry(f"{url}?heartbeat=1")
    consumer = open_registry(url)
    async with provider, consumer:
        me = Instance(zone="", env="", appid="demo.redis", hostname="h1", addrs=["http://10.0.0.1:8080"])
        await provider.register(me)
        seen = [i.addrs for i in await consumer.get_service("demo.redis")]
        print("consumer sees:", seen)
        assert seen == [["http://10.0.0.1:8080"]], seen
        await provider.deregister(me)
        left = await consumer.get_service("demo.redis")
        print("after deregister:", left)
        assert left == [], left


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/15"))
