"""Glue between discoverd and the frameworks an application already runs.

Each module is imported on its own. :mod:`~discoverd.integrations.asgi`,
:mod:`~discoverd.integrations.gunicorn` and :mod:`~discoverd.integrations.django` import no framework
(plain ASGI, gunicorn's hook arguments, ``sys.argv``); :mod:`~discoverd.integrations.aiohttp` imports
aiohttp (a dependency of discoverd) and :mod:`~discoverd.integrations.httpx` httpx (the ``httpx`` extra):

* :mod:`discoverd.integrations.asgi` — ASGI lifespan (FastAPI, Starlette, any ASGI server);
* :mod:`discoverd.integrations.aiohttp` — ``aiohttp.web`` applications;
* :mod:`discoverd.integrations.gunicorn` — one registration per gunicorn master, for its listening
  addresses (an instance is a server endpoint, not a process);
* :mod:`discoverd.integrations.django` — the synchronous client, started from a Django
  ``AppConfig.ready()``;
* :mod:`discoverd.integrations.httpx` — an ``httpx`` transport that sends requests through a caller.
"""
