#!/bin/sh
# Installs the system packages a target needs, only when missing, through apt-get.
#   scripts/sysdeps.sh test    what the test-suite needs (redis-server; Go + memberlist sources for the
#                              tests/gossip interop peer, built by scripts/build_harness.sh; Debian's
#                              chromium for tests/browser, driven by Playwright through executable_path)
#   scripts/sysdeps.sh bench   what the benchmarks need (wrk)
# Needs root (or sudo) when something is missing; prints what it installs.
set -eu
need=""
case "${1:-test}" in
  test)
    command -v redis-server >/dev/null 2>&1 || need="$need redis-server"  # tests/backends: a real Redis
    command -v go >/dev/null 2>&1 || need="$need golang-go"               # tests/gossip: the Go peer
    [ -d /usr/share/gocode/src/github.com/hashicorp/memberlist ] \
      || need="$need golang-github-hashicorp-memberlist-dev"
    [ -x /usr/bin/chromium ] || need="$need chromium"                     # tests/browser: the dashboard
    ;;
  bench) command -v wrk >/dev/null 2>&1 || need="$need wrk" ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "sysdeps: installing$need"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
