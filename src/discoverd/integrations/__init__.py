"""Glue between discoverd and the frameworks an application already runs.

Each module is imported on its own and imports its framework only when used:

* :mod:`discoverd.integrations.asgi` — ASGI lifespan (FastAPI, Starlette, any ASGI server);
* :mod:`discoverd.integrations.aiohttp` — ``aiohttp.web`` applications;
* :mod:`discoverd.integrations.gunicorn` — one registration per gunicorn master;
* :mod:`discoverd.integrations.django` — a Django ``AppConfig`` with the synchronous client;
* :mod:`discoverd.integrations.httpx` — an ``httpx`` transport that sends requests through a caller.
"""
