#!/usr/bin/env bash
# Smoke test of scripts/docker-env.sh and the node:18-alpine stand-in: a
# seed-style pnpm workspace (shared + svc, `workspace:*`) built by a four-stage
# Dockerfile with BuildKit and with the legacy builder, each image run and its
# /health read on a loopback port; with --registry, pushed to and pulled back
# from 127.0.0.1:5000. Cleans up what it made.
#
#   scripts/standin/smoke-test.sh [--registry]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REGISTRY_FLAG=()
[[ ${1:-} == --registry ]] && REGISTRY_FLAG=(--registry)
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,8p' "$0"; exit 0; }

eval "$("$HERE/../docker-env.sh" "${REGISTRY_FLAG[@]}")"
log() { printf 'smoke-test: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/standin-smoke.XXXXXX")
tag=standin-smoke-$$
containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
  "$DOCKER" image rm "$tag:buildkit" "$tag:legacy" ${DOCKER_REGISTRY:+"$DOCKER_REGISTRY/$tag:buildkit"} >/dev/null 2>&1 || true
  # the legacy builder leaves the untagged images of the base/deps/build stages
  "$DOCKER" image prune -f --filter label=com.kodingcaravan.smoke=1 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
mkdir -p packages/shared/src services/svc/src
cat >package.json <<'EOF'
{ "name": "seed", "private": true, "packageManager": "pnpm@8.15.0",
  "scripts": { "build": "pnpm -r build" } }
EOF
printf 'packages:\n  - "packages/*"\n  - "services/*"\n' >pnpm-workspace.yaml
printf 'node_modules\n**/node_modules\n**/dist\n' >.dockerignore
cat >packages/shared/package.json <<'EOF'
{ "name": "@seed/shared", "version": "1.0.0", "main": "dist/index.js",
  "scripts": { "build": "node -e \"require('fs').cpSync('src','dist',{recursive:true})\"" } }
EOF
echo 'exports.greet = (n) => `hello from shared, ${n}`;' >packages/shared/src/index.js
cat >services/svc/package.json <<'EOF'
{ "name": "@seed/svc", "version": "1.0.0", "main": "dist/index.js",
  "scripts": { "build": "node -e \"require('fs').cpSync('src','dist',{recursive:true})\"" },
  "dependencies": { "@seed/shared": "workspace:*", "ms": "2.1.3" } }
EOF
cat >services/svc/src/index.js <<'EOF'
const http = require("http");
const { greet } = require("@seed/shared");
const ms = require("ms");
http.createServer((req, res) => {
  if (req.url !== "/health") { res.statusCode = 404; return res.end(); }
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ ok: true, msg: greet("svc"), uid: process.getuid(), t: ms("2m") }));
}).listen(3000, () => console.log("svc listening on 3000"));
EOF
cat >Dockerfile <<'EOF'
FROM node:18-alpine AS base
LABEL com.kodingcaravan.smoke=1
RUN corepack enable && corepack prepare pnpm@8.15.0 --activate
WORKDIR /app

FROM base AS deps
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY packages/shared/package.json packages/shared/
COPY services/svc/package.json services/svc/
RUN pnpm install --frozen-lockfile

FROM deps AS build
COPY packages packages
COPY services services
RUN pnpm -r build

FROM node:18-alpine AS runtime
WORKDIR /app
COPY --from=build /app/packages/shared/package.json shared/package.json
COPY --from=build /app/packages/shared/dist shared/dist
COPY --from=build /app/services/svc/package.json svc/package.json
COPY --from=build /app/services/svc/dist svc/dist
WORKDIR /app/svc
RUN sed -i 's#"workspace:\*"#"file:../shared"#' package.json && npm install --omit=dev --no-audit --no-fund
RUN addgroup -g 1001 -S nodejs && adduser -S nodejs -u 1001 -G nodejs
USER nodejs
EXPOSE 3000
CMD ["node", "dist/index.js"]
EOF

log "pnpm-lock.yaml (host pnpm 8.15.0)"
if [[ $(pnpm --version 2>/dev/null) == 8.15.0 ]]; then
  pnpm install --lockfile-only >pnpm.log 2>&1 || { cat pnpm.log >&2; exit 1; }
else
  npx -y pnpm@8.15.0 install --lockfile-only >pnpm.log 2>&1 || { cat pnpm.log >&2; exit 1; }
fi

check() { # image port
  local c="$tag-$2" body='' i
  containers+=("$c")
  "$DOCKER" run -d --name "$c" -p "127.0.0.1:$2:3000" "$1" >/dev/null
  for ((i = 0; i < 60; i++)); do
    body=$(curl -fsS "http://127.0.0.1:$2/health" 2>/dev/null) && break
    sleep 0.25
  done
  [[ $body == *'"ok":true'*'"uid":1001'* ]] || { "$DOCKER" logs "$c" >&2; echo "smoke-test: FAIL $1: '$body'" >&2; exit 1; }
  log "ok $1: $body"
}

if [[ $DOCKER_BUILDKIT == 1 ]]; then
  log "build with BuildKit ($DOCKER)"
  DOCKER_BUILDKIT=1 "$DOCKER" build -q -t "$tag:buildkit" . >build-bk.log 2>&1 || { tail -30 build-bk.log >&2; exit 1; }
  check "$tag:buildkit" 18181
else
  log "skip BuildKit: $DOCKER has none"
fi
log "build with the legacy builder ($DOCKER)"
DOCKER_BUILDKIT=0 "$DOCKER" build -q -t "$tag:legacy" . >build-legacy.log 2>&1 || { tail -30 build-legacy.log >&2; exit 1; }
check "$tag:legacy" 18182

if [[ -n ${DOCKER_REGISTRY:-} ]]; then
  src=$tag:legacy
  [[ $DOCKER_BUILDKIT == 1 ]] && src=$tag:buildkit
  ref=$DOCKER_REGISTRY/$tag:buildkit
  log "push/pull $ref"
  "$DOCKER" tag "$src" "$ref"
  "$DOCKER" push "$ref" >push.log 2>&1 || { tail -20 push.log >&2; exit 1; }
  "$DOCKER" image rm "$ref" >/dev/null
  "$DOCKER" pull "$ref" >pull.log 2>&1 || { tail -20 pull.log >&2; exit 1; }
  check "$ref" 18183
  # drop the test tag from the registry (blobs stay until garbage-collected)
  digest=$(curl -fsSI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$DOCKER_REGISTRY/v2/$tag/manifests/buildkit" | tr -d '\r' |
    awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
  [[ -z $digest ]] || curl -fsS -X DELETE "http://$DOCKER_REGISTRY/v2/$tag/manifests/$digest" >/dev/null || true
fi
log "all passed"
