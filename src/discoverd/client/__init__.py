"""The client SDK: :class:`~.async_client.AsyncClient`, its synchronous facade
:class:`~.sync_client.Client`, registrations, and the ``discoverd://`` registry backend."""
