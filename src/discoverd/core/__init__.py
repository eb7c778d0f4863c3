"""The synchronous, I/O-free heart of discoverd: state machines that take ``now`` and return what to do.

Nothing here awaits, opens a socket or reads a clock.
"""
