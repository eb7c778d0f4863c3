#!/bin/sh
# Builds the Go memberlist test peer (tests/gossip/harness/src/mlharness) offline, in GOPATH mode,
# against Debian's packaged Go sources (golang-go + golang-github-hashicorp-memberlist-dev).
#   scripts/build_harness.sh [OUTPUT]     default: build/mlharness (relative to the repository root)
# The Go build cache lives next to the output (OUTPUT_DIR/.gocache) unless HARNESS_GOCACHE names another
# directory. Exit 3 when Go or the memberlist sources are missing (install: sh scripts/sysdeps.sh test).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
gocode=/usr/share/gocode
out=${1:-$root/build/mlharness}
case "$out" in /*) ;; *) out="$(pwd)/$out" ;; esac

if ! command -v go >/dev/null 2>&1; then
  echo "build_harness: 'go' is not installed (apt-get install golang-go, or: sh scripts/sysdeps.sh test)" >&2
  exit 3
fi
if [ ! -d "$gocode/src/github.com/hashicorp/memberlist" ]; then
  echo "build_harness: $gocode/src/github.com/hashicorp/memberlist is missing" \
    "(apt-get install golang-github-hashicorp-memberlist-dev, or: sh scripts/sysdeps.sh test)" >&2
  exit 3
fi

outdir=$(dirname "$out")
mkdir -p "$outdir"
GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
  GOPATH="$root/tests/gossip/harness:$gocode" GOCACHE="${HARNESS_GOCACHE:-$outdir/.gocache}" \
  go build -o "$out" mlharness
echo "build_harness: built $out"
