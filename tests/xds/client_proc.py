"""A gRPC client using grpcio's own xDS support, driven over stdin (run with ``sys.executable``).

Reads the bootstrap from ``GRPC_XDS_BOOTSTRAP`` / ``GRPC_XDS_BOOTSTRAP_CONFIG`` (set by the test) or
from ``--bootstrap JSON``, then one command per line on stdin:

* ``call APPID N DEADLINE`` — N unary calls to ``xds:///APPID`` (``/test.Echo/Who``), one after the
  other, each with DEADLINE seconds; prints one JSON line: the list of answers, each the serving
  backend's name or ``!CODE`` (e.g. ``!UNAVAILABLE``, ``!DEADLINE_EXCEEDED``);
* ``quit``.

Prints ``ready`` first. One channel per appid, kept for the life of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import grpc

from discoverd.grpc import channel

METHOD = "/test.Echo/Who"


async def call(stub: Any, deadline: float) -> str:
    try:
        answer: bytes = await stub(b"", timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        return f"!{exc.code().name}"
    return answer.decode()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="")
    args = parser.parse_args()
    boot = json.loads(args.bootstrap) if args.bootstrap else None
    loop = asyncio.get_running_loop()
    stubs: dict[str, Any] = {}
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            return
        _, appid, n, deadline = words
        if appid not in stubs:
            ch = channel(appid, bootstrap=boot)
            stubs[appid] = ch.unary_unary(METHOD)
        out = [await call(stubs[appid], float(deadline)) for _ in range(int(n))]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
