#!/usr/bin/env bash
# The main job on a fresh machine: make a Docker engine available (starting a local one and a
# node:18-alpine stand-in where none is reachable), then build the example's images.
#   scripts/images.sh [ARGS...]    # ARGS go to `cargo xtask images`, e.g. --dry-run, a service
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/docker-env.sh)"
export DOCKER DOCKER_BUILDKIT
exec cargo xtask images "$@"
