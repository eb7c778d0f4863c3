"""Memberlist (SWIM + Lifeguard) and go-micro gossip registry: the I/O-free half (codecs, state machines)."""
