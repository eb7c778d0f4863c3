"""Which registry node a client talks to (spec §8.2–8.3, minus the Go client's defects).

The working list starts as the seed nodes. Every change of ``infra.discovery`` **replaces** it (the
Go client ignores shrinking lists): the nodes of the client's own zone first, then the others, each
group shuffled so clients spread over the nodes, then the configured seeds not listed by discovery
(a last resort, e.g. independent servers that do not know each other). An empty discovery list keeps
the list as it is. ``switch``
moves to the next node; the poll loop resets its ``latest_timestamp``s when the node changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from discoverd.model import Instance


def http_hostports(instances: Iterable[Instance]) -> list[tuple[str, str]]:
    """``(zone, host:port)`` of every ``http://`` address of the given discovery instances."""
    out = []
    for ins in instances:
        for addr in ins.addrs:
            if addr.startswith("http://"):
                out.append((ins.zone, addr[len("http://") :].split("/", 1)[0]))
    return out


class NodeList:
    """The client's registry nodes and the one in use. Pure bookkeeping; not thread-safe."""

    def __init__(self, seeds: Sequence[str], zone: str, rng: random.Random | None = None) -> None:
        if not seeds:
            raise ValueError("at least one registry node is required")
        self.seeds = list(dict.fromkeys(seeds))
        self.zone = zone
        self._rng = rng if rng is not None else random.Random()
        self.nodes = list(self.seeds)
        self._rng.shuffle(self.nodes)
        self._index = 0

    def __repr__(self) -> str:
        return f"NodeList(current={self.current!r}, nodes={self.nodes!r})"

    @property
    def current(self) -> str:
        return self.nodes[self._index % len(self.nodes)]

    def switch(self) -> str:
        """Move to the next node and return it."""
        self._index = (self._index + 1) % len(self.nodes)
        return self.current

    def learn(self, instances: Iterable[Instance]) -> bool:
        """Replace the list from ``infra.discovery`` instances; returns True when it changed.

        Own-zone nodes come first. The node in use stays in use when it is still listed.
        """
        pairs = http_hostports(instances)
        own = list(dict.fromkeys(a for z, a in pairs if z == self.zone))
        other = list(dict.fromkeys(a for z, a in pairs if z != self.zone and a not in own))
        if not own and not other:
            return False
        seeds = [s for s in self.seeds if s not in own and s not in other]
        if (
            sorted(own) == sorted(self.nodes[: len(own)])
            and sorted(other) == sorted(self.nodes[len(own) : len(own) + len(other)])
            and self.nodes[len(own) + len(other) :] == seeds
        ):
            return False
        current = self.current
        self._rng.shuffle(own)
        self._rng.shuffle(other)
        self.nodes = own + other + seeds
        self._index = self.nodes.index(current) if current in self.nodes else 0
        return True
