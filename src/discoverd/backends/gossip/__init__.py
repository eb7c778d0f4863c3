"""The gossip backend: a memberlist-compatible node on asyncio and the go-micro gossip registry over it."""
