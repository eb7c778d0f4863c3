"""Registry backends behind one go-micro-style interface (:class:`~.base.Registry`).

``open_registry(url)`` picks one by URL scheme: ``memory://``, ``discoverd://host:port[,host:port]``.
"""
