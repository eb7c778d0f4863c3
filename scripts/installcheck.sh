#!/bin/sh
# `pip install .` as a user does, in fresh virtualenvs outside the repository:
#   1. no extras: the memory-registry example runs and loads no optional library; `discoverd serve`
#      says which extra it needs; building the package prints no setuptools warning;
#   2. [redis]: the Redis example runs against a redis-server started here (OS-assigned port, stopped by PID).
# Usage: scripts/installcheck.sh [python]   (the interpreter that creates the virtualenvs)
set -eu
PY="${1:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d)"
REDIS_PID=""
cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

fresh() {  # fresh NAME SPEC: a virtualenv with `pip install SPEC` (copied tree: the checkout stays clean)
  "$PY" -m venv "$TMP/$1"
  "$TMP/$1/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1
  "$TMP/$1/bin/python" -m pip install -v "$2" >"$TMP/$1.log" 2>&1 || { cat "$TMP/$1.log"; exit 1; }
  if grep -E "SetuptoolsDeprecationWarning|SetuptoolsWarning|_DeprecatedConfig" "$TMP/$1.log"; then
    echo "installcheck: setuptools warned while building discoverd" >&2; exit 1
  fi
}

cp -r "$ROOT/src" "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/LICENSE" "$ROOT/examples" "$TMP/"
mkdir -p "$TMP/tree" && mv "$TMP/src" "$TMP/pyproject.toml" "$TMP/README.md" "$TMP/LICENSE" "$TMP/tree/"
find "$TMP/tree/src" -name '*.egg-info' -prune -exec rm -rf {} +

echo "installcheck: pip install . (no extras)"
fresh base "$TMP/tree"
"$TMP/base/bin/python" "$TMP/examples/memory_registry.py"
if "$TMP/base/bin/discoverd" serve --addr 127.0.0.1:0 >"$TMP/serve.out" 2>&1; then
  echo "installcheck: discoverd serve started without the [server] extra" >&2; exit 1
fi
grep -q "discoverd\[server\]" "$TMP/serve.out" || { cat "$TMP/serve.out"; echo "installcheck: no extra named" >&2; exit 1; }

echo "installcheck: pip install '.[redis]'"
fresh redis "$TMP/tree[redis]"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
i=0
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -gt 100 ] && { cat "$TMP/redis.log"; exit 1; }
  sleep 0.1
done
"$TMP/redis/bin/python" "$TMP/examples/redis_registry.py" "redis://127.0.0.1:$PORT/15"
echo "installcheck: ok"
