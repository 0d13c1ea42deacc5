#!/usr/bin/env bash
# Make a Docker engine (and, with --registry, a local OCI registry) available on
# this machine, idempotently, and print which client to use.
#
#   eval "$(scripts/docker-env.sh)"             # engine + node:18-alpine stand-in
#   eval "$(scripts/docker-env.sh --registry)"  # ... + registry on 127.0.0.1:5000
#
# See --help. Progress goes to stderr; stdout carries only `export` lines.
set -euo pipefail

PROG=docker-env
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STANDIN_DIR=$SCRIPT_DIR/standin
STANDIN_IMAGE=node:18-alpine
STANDIN_LABEL=com.kodingcaravan.standin
# The stand-in's recipe: bump the number when build_standin changes; the files
# in scripts/standin/ count by their hash. An existing stand-in with another
# recipe label is rebuilt (a real, pulled node:18-alpine is never touched).
STANDIN_RECIPE_VERSION=2
REGISTRY_ADDR=127.0.0.1:5000
WAIT_SECS=${DOCKER_ENV_WAIT_SECS:-60}

usage() {
  cat <<EOF
usage: scripts/docker-env.sh [--registry] [--compose] [--no-image] [--rebuild-image] [--help]

Makes a Docker engine reachable and prints, on stdout, shell lines naming the
client to use, for:   eval "\$(scripts/docker-env.sh)"

  1. If \`\$DOCKER info\` already succeeds (honouring DOCKER_HOST), uses that
     engine. Otherwise (root only) installs Debian's docker.io if needed and
     starts dockerd in the background (storage driver overlay2, log in
     /var/log/dockerd-xtask.log), waiting up to ${WAIT_SECS}s for it.
  2. Makes sure the image node:18-alpine exists. Where none can be pulled, it
     builds a local stand-in (busybox + this machine's node/npm/corepack,
     label ${STANDIN_LABEL}=true; see scripts/standin/README.md) and loads
     it with \`docker import\`.
  3. With --registry, also makes sure a registry (Debian's docker-registry)
     answers on http://${REGISTRY_ADDR}/v2/, storing under
     /var/lib/docker-env-xtask/registry.

Options:
  --registry       also ensure the local registry on ${REGISTRY_ADDR}
  --compose        also ensure docker compose (the plugin, else Debian's
                   docker-compose), which \`cargo xtask watch --up\` runs
  --no-image       skip step 2
  --rebuild-image  rebuild the node:18-alpine stand-in even if it exists
                   (refuses to replace an image that is not a stand-in)
  -h, --help       this text

Prints, e.g.:
  export DOCKER=/usr/bin/docker
  export DOCKER_BUILDKIT=1
  export DOCKER_REGISTRY=${REGISTRY_ADDR}     (with --registry)

Client choice: a preset DOCKER (path or name) is used as is. Otherwise the
first docker client on PATH (or /usr/bin/docker) whose \`docker buildx version\`
works, else one with BuildKit built in (a client older than 23, like Debian's
20.10 /usr/bin/docker, with DOCKER_BUILDKIT=1), else any client with
DOCKER_BUILDKIT=0.

Environment: DOCKER, DOCKER_HOST, DOCKER_ENV_STATE_DIR (default
/var/lib/docker-env-xtask), DOCKER_ENV_WAIT_SECS (default 60).
Safe to run concurrently (serialised by a lock) and repeatedly (a no-op once
everything is up).
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
# die with the last lines of a log file
die_log() {
  local file=$1; shift
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  if [[ -f $file ]]; then
    printf '%s: last lines of %s:\n' "$PROG" "$file" >&2
    tail -n 25 "$file" | sed 's/^/    /' >&2
  fi
  exit 1
}

WANT_REGISTRY=0 WANT_IMAGE=1 REBUILD_IMAGE=0 WANT_COMPOSE=0
while (($#)); do
  case $1 in
    --registry) WANT_REGISTRY=1 ;;
    --compose) WANT_COMPOSE=1 ;;
    --no-image) WANT_IMAGE=0 ;;
    --rebuild-image) REBUILD_IMAGE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

IS_ROOT=0
[[ $EUID -eq 0 ]] && IS_ROOT=1

if [[ $IS_ROOT == 1 ]]; then
  STATE_DIR=${DOCKER_ENV_STATE_DIR:-/var/lib/docker-env-xtask}
  LOG_DIR=/var/log
else
  STATE_DIR=${DOCKER_ENV_STATE_DIR:-${TMPDIR:-/tmp}/docker-env-xtask-$EUID}
  LOG_DIR=$STATE_DIR
fi
DOCKERD_LOG=$LOG_DIR/dockerd-xtask.log
REGISTRY_LOG=$LOG_DIR/docker-registry-xtask.log
APT_LOG=$STATE_DIR/apt.log
mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"

# One run at a time (tests may call this in parallel). Fd 9 is closed for
# every background daemon we start, so they never hold the lock.
exec 9>"$STATE_DIR/lock"
if ! flock -n 9; then
  log "waiting for another docker-env.sh run to finish"
  flock -w 600 9 || die "timed out waiting for the lock $STATE_DIR/lock"
fi

# ---------------------------------------------------------------- apt ----
# Installs the packages not installed yet; runs `apt-get update` only when a
# package has no install candidate or the install fails on stale lists.
apt_install() {
  local p out missing=()
  # (outputs are captured, not piped into `grep -q`: under pipefail the
  # writer's SIGPIPE would make the pipeline fail)
  for p in "$@"; do
    out=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || out=''
    [[ $out == *'install ok installed'* ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $IS_ROOT == 1 ]] || die "need package(s) ${missing[*]}, but not root: install them (apt-get install ${missing[*]}) or run as root"
  command -v apt-get >/dev/null || die "need package(s) ${missing[*]} and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
  local need_update=0
  for p in "${missing[@]}"; do
    out=$(apt-cache policy "$p" 2>/dev/null) || out=''
    [[ $out =~ Candidate:\ [^\(] ]] || need_update=1
  done
  if [[ $need_update == 1 ]]; then
    log "apt-get update"
    "${apt[@]}" update >>"$APT_LOG" 2>&1 || die_log "$APT_LOG" "apt-get update failed"
  fi
  log "apt-get install ${missing[*]}"
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$APT_LOG" 2>&1; then
    [[ $need_update == 1 ]] && die_log "$APT_LOG" "apt-get install ${missing[*]} failed"
    log "install failed; apt-get update and retry"
    "${apt[@]}" update >>"$APT_LOG" 2>&1 || die_log "$APT_LOG" "apt-get update failed"
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$APT_LOG" 2>&1 ||
      die_log "$APT_LOG" "apt-get install ${missing[*]} failed"
  fi
}

# ------------------------------------------------------------- client ----
DOCKER_BIN='' BUILDKIT=0

client_has_buildx() { "$1" buildx version >/dev/null 2>&1; }
# Clients before 23.0 have BuildKit built into `docker build` (DOCKER_BUILDKIT=1);
# from 23.0 on, BuildKit needs the buildx plugin.
client_builtin_buildkit() {
  local major
  major=$("$1" --version 2>/dev/null | sed -n 's/^Docker version \([0-9][0-9]*\)\..*/\1/p')
  [[ -n $major && $major -lt 23 ]]
}

choose_client() {
  DOCKER_BIN='' BUILDKIT=0
  if [[ -n ${DOCKER:-} ]]; then
    DOCKER_BIN=$(command -v "$DOCKER" 2>/dev/null) || { DOCKER_BIN=''; return 0; }
    if client_has_buildx "$DOCKER_BIN" || client_builtin_buildkit "$DOCKER_BIN"; then BUILDKIT=1; fi
    return 0
  fi
  local c candidates=() seen=' '
  while IFS= read -r c; do
    [[ -x $c && $seen != *" $c "* ]] || continue
    candidates+=("$c") seen+="$c "
  done < <(type -ap docker; echo /usr/bin/docker)
  ((${#candidates[@]})) || return 0
  for c in "${candidates[@]}"; do
    if client_has_buildx "$c"; then DOCKER_BIN=$c BUILDKIT=1; return 0; fi
  done
  for c in "${candidates[@]}"; do
    if client_builtin_buildkit "$c"; then DOCKER_BIN=$c BUILDKIT=1; return 0; fi
  done
  DOCKER_BIN=${candidates[0]} BUILDKIT=0
}

engine_up() { [[ -n $DOCKER_BIN ]] && timeout 20 "$DOCKER_BIN" info >/dev/null 2>&1; }

docker_() { "$DOCKER_BIN" "$@"; }

# ------------------------------------------------------------- engine ----
dockerd_pid() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] &&
    echo "$pid"
}

# A dockerd/containerd killed hard leaves pid files behind; when such a pid has
# been reused by another process, dockerd refuses to start (or waits on a
# containerd that is not there). Remove pid files whose process is gone or is
# something else.
remove_stale_pidfiles() {
  local f want pid
  for f in /var/run/docker.pid:dockerd /var/run/docker/containerd/containerd.pid:containerd; do
    want=${f##*:} f=${f%:*}
    [[ -f $f ]] || continue
    pid=$(cat "$f" 2>/dev/null) || pid=''
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null || [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "$want" ]]; then
      rm -f "$f"
    fi
  done
}

start_dockerd() {
  local pid dockerd
  if pid=$(dockerd_pid); then
    log "dockerd (pid $pid) is running but not answering yet; waiting"
  else
    dockerd=$(command -v dockerd) || die "dockerd not found after installing docker.io"
    remove_stale_pidfiles
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    printf '\n=== %s: docker-env.sh starts dockerd\n' "$(date -u +%FT%TZ)" >>"$DOCKERD_LOG"
    log "starting dockerd (log: $DOCKERD_LOG)"
    setsid nohup "$dockerd" --host=unix:///var/run/docker.sock --storage-driver=overlay2 \
      </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    pid=$!
  fi
  local deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    if [[ -S /var/run/docker.sock ]] && engine_up; then
      log "dockerd is up (pid $pid)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die_log "$DOCKERD_LOG" "dockerd exited during startup"
    sleep 0.5
  done
  die_log "$DOCKERD_LOG" "dockerd did not answer within ${WAIT_SECS}s (pid $pid still running)"
}

ensure_engine() {
  choose_client
  engine_up && return 0
  case ${DOCKER_HOST:-} in
    '' | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer \`${DOCKER_BIN:-docker} info\`; not starting a local engine for it" ;;
  esac
  [[ $IS_ROOT == 1 ]] || die "no Docker engine answers and not root: cannot install or start dockerd"
  apt_install docker.io
  choose_client
  [[ -n $DOCKER_BIN ]] || die "DOCKER=${DOCKER:-docker}: no such client, even after installing docker.io"
  engine_up || start_dockerd
}

# If the only clients lack BuildKit (e.g. /usr/local/bin/docker 28.x without the
# buildx plugin), bring in Debian's 20.10 client, which has it built in.
ensure_buildkit_client() {
  [[ $BUILDKIT == 1 || -n ${DOCKER:-} || $IS_ROOT == 0 ]] && return 0
  [[ -x /usr/bin/docker ]] && return 0
  log "no client with BuildKit; installing docker.io for /usr/bin/docker"
  if (apt_install docker.io); then choose_client; fi
  [[ $BUILDKIT == 1 ]] || log "warning: no BuildKit-capable client; builds will use the legacy builder"
}

# ------------------------------------------------------ stand-in image ----
label_of() { docker_ image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

# copy a file to the same path under the rootfs, resolving symlinks
copy_same_path() {
  local src=$1 root=$2
  mkdir -p "$root$(dirname "$src")"
  cp -L "$src" "$root$src"
}

# copy the shared libraries (and the loader) `ldd` lists for a binary
copy_libs() {
  local bin=$1 root=$2 lib
  # "not a dynamic executable" (static busybox) lists nothing
  while IFS= read -r lib; do
    [[ -e $root$lib ]] || copy_same_path "$lib" "$root"
  done < <(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true)
}

build_standin() {
  apt_install busybox-static
  local busybox=/bin/busybox
  [[ -x $busybox ]] || die "$busybox missing after installing busybox-static"
  local node npm_cli npm_dir corepack_dir node_version
  node=$(command -v node) || die "no node on PATH: the stand-in copies this machine's node"
  node=$(readlink -f "$node")
  node_version=$("$node" --version) || die "$node --version failed"
  npm_cli=$(command -v npm) || die "no npm on PATH"
  npm_dir=$(dirname "$(dirname "$(readlink -f "$npm_cli")")")
  [[ -f $npm_dir/package.json ]] || die "cannot locate npm's directory (got $npm_dir)"
  corepack_dir=$(dirname "$npm_dir")/corepack
  if [[ ! -f $corepack_dir/package.json ]] && command -v corepack >/dev/null; then
    corepack_dir=$(dirname "$(dirname "$(readlink -f "$(command -v corepack)")")")
  fi
  [[ -f $corepack_dir/package.json ]] || die "cannot locate corepack (looked beside npm in $(dirname "$npm_dir"))"

  log "building the $STANDIN_IMAGE stand-in (busybox + node $node_version)"
  local tmp root
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/docker-env-standin.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  root=$tmp/rootfs
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/local/sbin,usr/local/lib/node_modules} \
    "$root"/{etc/ssl/certs,root,home/node,tmp,var/tmp,var/cache,run,proc,sys,dev}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 700 "$root/root"

  # busybox and a link for each applet, where busybox says it belongs
  cp "$busybox" "$root/bin/busybox"
  copy_libs "$busybox" "$root"
  local applet
  while IFS= read -r applet; do
    applet=${applet#/}
    [[ -n $applet && ${applet##*/} != busybox ]] || continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sfn /bin/busybox "$root/$applet"
  done < <("$busybox" --list-full)
  [[ -L $root/bin/sh ]] || ln -sfn /bin/busybox "$root/bin/sh"
  # where alpine has it (shell of `adduser -S` users); Debian lists /usr/sbin
  [[ -e $root/sbin/nologin ]] || ln -sfn /bin/busybox "$root/sbin/nologin"

  # coreutils env (shebangs `#!/usr/bin/env node`; supports -S)
  rm -f "$root/usr/bin/env"
  cp -L /usr/bin/env "$root/usr/bin/env"
  copy_libs /usr/bin/env "$root"

  # node, npm, corepack, laid out as the official image has them
  cp "$node" "$root/usr/local/bin/node"
  copy_libs "$node" "$root"
  cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
  cp -a "$corepack_dir" "$root/usr/local/lib/node_modules/corepack"
  ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  ln -sfn ../lib/node_modules/corepack/dist/corepack.js "$root/usr/local/bin/corepack"

  # /etc
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  ln -sfn certs/ca-certificates.crt "$root/etc/ssl/cert.pem"
  local f
  for f in passwd group shadow nsswitch.conf os-release; do
    cp "$STANDIN_DIR/$f" "$root/etc/$f"
  done
  chmod 640 "$root/etc/shadow"
  echo 3.20.0 >"$root/etc/alpine-release"
  install -m 755 "$STANDIN_DIR/addgroup" "$root/usr/sbin/addgroup"
  install -m 755 "$STANDIN_DIR/adduser" "$root/usr/sbin/adduser"

  local tar_owner=()
  if [[ $IS_ROOT == 1 ]]; then
    chown -R 0:0 "$root"
    chown 1000:1000 "$root/home/node"
  else
    tar_owner=(--owner=0 --group=0)
  fi

  local out=$tmp/import.out
  if ! tar --sort=name --mtime=@1704067200 --numeric-owner "${tar_owner[@]}" -C "$root" -cf - . |
    docker_ import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "ENV NODE_VERSION=${node_version#v}" \
      --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
      --change 'ENV COREPACK_INTEGRITY_KEYS=0' \
      --change 'WORKDIR /' \
      --change 'CMD ["node"]' \
      --change "LABEL $STANDIN_LABEL=true $STANDIN_LABEL.recipe=$STANDIN_RECIPE $STANDIN_LABEL.node=$node_version" \
      --message "stand-in for $STANDIN_IMAGE built by scripts/docker-env.sh" \
      - "$STANDIN_IMAGE" >"$out" 2>&1; then
    die_log "$out" "docker import of the stand-in failed"
  fi
  rm -rf "$tmp"
  trap - EXIT
  docker_ run --rm "$STANDIN_IMAGE" node -e 'process.exit(0)' >/dev/null 2>&1 ||
    die "the stand-in $STANDIN_IMAGE was imported but \`node\` does not run in it"
  log "stand-in $STANDIN_IMAGE ready"
}

ensure_image() {
  local old_id=''
  if old_id=$(docker_ image inspect -f '{{.Id}}' "$STANDIN_IMAGE" 2>/dev/null); then
    local standin recipe
    standin=$(label_of "$STANDIN_IMAGE" "$STANDIN_LABEL") || standin=''
    recipe=$(label_of "$STANDIN_IMAGE" "$STANDIN_LABEL.recipe") || recipe=''
    if [[ $standin != true ]]; then
      [[ $REBUILD_IMAGE == 1 ]] && log "$STANDIN_IMAGE is not a stand-in (a real image?); leaving it"
      return 0
    fi
    [[ $REBUILD_IMAGE == 0 && $recipe == "$STANDIN_RECIPE" ]] && return 0
    [[ $REBUILD_IMAGE == 1 ]] || log "stand-in $STANDIN_IMAGE has recipe '$recipe', want '$STANDIN_RECIPE': rebuilding"
  fi
  build_standin
  # drop the replaced stand-in unless something still uses it
  if [[ -n $old_id ]] && [[ $(docker_ image inspect -f '{{.Id}}' "$STANDIN_IMAGE" 2>/dev/null) != "$old_id" ]]; then
    docker_ image rm "$old_id" >/dev/null 2>&1 || true
  fi
}

# ----------------------------------------------------------- registry ----
registry_up() { curl -fsS --max-time 3 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1; }

ensure_registry() {
  command -v curl >/dev/null || apt_install curl
  registry_up && return 0
  apt_install docker-registry
  local bin=/usr/bin/docker-registry data=$STATE_DIR/registry config=$STATE_DIR/registry.yml
  [[ -x $bin ]] || die "$bin missing after installing docker-registry"
  mkdir -p "$data" "$(dirname "$REGISTRY_LOG")"
  cat >"$config.tmp" <<EOF
# written by scripts/docker-env.sh
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  mv "$config.tmp" "$config"
  printf '\n=== %s: docker-env.sh starts docker-registry\n' "$(date -u +%FT%TZ)" >>"$REGISTRY_LOG"
  log "starting docker-registry on $REGISTRY_ADDR (log: $REGISTRY_LOG)"
  setsid nohup "$bin" serve "$config" </dev/null >>"$REGISTRY_LOG" 2>&1 9>&- &
  local pid=$! deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if registry_up; then
      log "registry is up (pid $pid)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die_log "$REGISTRY_LOG" "docker-registry exited during startup (port $REGISTRY_ADDR taken?)"
    sleep 0.3
  done
  die_log "$REGISTRY_LOG" "docker-registry did not answer on $REGISTRY_ADDR within 30s"
}

# ------------------------------------------------------------ compose ----
# `cargo xtask watch --up` runs `docker compose up`: the compose plugin of the
# chosen client, else a docker-compose binary (Debian's v1 package).
ensure_compose() {
  if "$DOCKER_BIN" compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; then
    return 0
  fi
  apt_install docker-compose
  command -v docker-compose >/dev/null || die "docker-compose missing after installing docker-compose"
}

# --------------------------------------------------------------- main ----
STANDIN_RECIPE=$STANDIN_RECIPE_VERSION-$(cd "$STANDIN_DIR" && cat addgroup adduser passwd group shadow nsswitch.conf os-release | sha256sum | cut -c1-12)
ensure_engine
ensure_buildkit_client
[[ $WANT_IMAGE == 1 ]] && ensure_image
[[ $WANT_REGISTRY == 1 ]] && ensure_registry
[[ $WANT_COMPOSE == 1 ]] && ensure_compose

printf 'export DOCKER=%q\n' "$DOCKER_BIN"
printf 'export DOCKER_BUILDKIT=%s\n' "$BUILDKIT"
[[ -n ${DOCKER_HOST:-} ]] && printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"
[[ $WANT_REGISTRY == 1 ]] && printf 'export DOCKER_REGISTRY=%s\n' "$REGISTRY_ADDR"
exit 0
