#!/bin/sh
# Installs the system packages the test-suite and benchmarks need, only when missing.
# Needs root (or sudo) for apt-get; prints what it does.
set -eu
need=""
command -v wrk >/dev/null 2>&1 || need="$need wrk"
[ -z "$need" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "sysdeps: installing$need"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
