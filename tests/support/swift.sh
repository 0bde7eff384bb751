#!/usr/bin/env bash
# A private single-node OpenStack Swift (tempauth + s3api) on 127.0.0.1 for the object-store tests.
#
#   tests/support/swift.sh start DIR   install Swift when missing (root on Debian), start it in DIR, print the endpoint
#   tests/support/swift.sh status DIR  print the endpoint when it runs, else exit 1
#   tests/support/swift.sh stop DIR    stop the servers started in DIR (the files stay; remove DIR to forget it)
#
# `start` is idempotent: when DIR's servers run and answer, it only prints the endpoint; concurrent calls are serialised
# with a lock in DIR. Five ports from a base derived from DIR (20000-29995, so two directories rarely meet and the
# defaults of other Swift set-ups are avoided); TROVE_SWIFT_PORT_BASE overrides it. The servers run in their own session
# with output in DIR/run/*.log, so they outlive the caller; `stop` ends them.
# Printed (stdout, one key=value a line): url (proxy), auth_url (tempauth v1), user, key (Swift API) and
# access_key, secret_key, region (S3 API; the same account), memcached (where tempauth keeps its tokens). These are
# throw-away test credentials; a second user, reauth:tester (key testing, account AUTH_reauth), lets a test revoke
# its own tokens without disturbing others.
set -euo pipefail

usage() { echo "usage: $0 start|status|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
W=$(cd "$2" && pwd)

if [ -n "${TROVE_SWIFT_PORT_BASE:-}" ]; then
  base=$TROVE_SWIFT_PORT_BASE
else
  base=$((20000 + ($(printf '%s' "$W" | cksum | cut -d' ' -f1) % 2000) * 5))
fi
[ -f "$W/ports" ] && base=$(cat "$W/ports")
P_PROXY=$base P_OBJECT=$((base + 1)) P_CONTAINER=$((base + 2)) P_ACCOUNT=$((base + 3)) P_MEMCACHED=$((base + 4))
SERVERS="memcached object container account proxy"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
http_code() { curl -s -m 2 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true; }
alive() { [ -f "$W/run/$1.pid" ] && kill -0 "$(cat "$W/run/$1.pid")" 2>/dev/null; }

# Ready: every server of DIR alive, the proxy healthy, the storage servers answering HTTP and tempauth issuing tokens.
ready() {
  local n p
  for n in $SERVERS; do alive "$n" || return 1; done
  [ "$(http_code "http://127.0.0.1:$P_PROXY/healthcheck")" = 200 ] || return 1
  for p in $P_OBJECT $P_CONTAINER $P_ACCOUNT; do [ "$(http_code "http://127.0.0.1:$p/")" != 000 ] || return 1; done
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'X-Storage-User: test:tester' -H 'X-Storage-Pass: testing' \
    "http://127.0.0.1:$P_PROXY/auth/v1.0" 2>/dev/null || true)" = 200 ]
}

report() {
  cat <<EOF
url=http://127.0.0.1:$P_PROXY
auth_url=http://127.0.0.1:$P_PROXY/auth/v1.0
user=test:tester
key=testing
access_key=test:tester
secret_key=testing
region=us-east-1
memcached=127.0.0.1:$P_MEMCACHED
EOF
}

stop_servers() {
  local n pids=()
  for n in $SERVERS; do
    if alive "$n"; then pids+=("$(cat "$W/run/$n.pid")"); fi
    rm -f "$W/run/$n.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "${pids[@]}" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

install_if_missing() {
  local missing=()
  command -v swift-proxy-server >/dev/null 2>&1 || missing+=(swift swift-proxy swift-account swift-container swift-object)
  command -v memcached >/dev/null 2>&1 || [ -x /usr/bin/memcached ] || missing+=(memcached)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Swift is not installed (missing: ${missing[*]}); install them, or run as root on Debian" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# The proxy's configuration: s3api right before tempauth (region us-east-1); tempauth keeps its tokens in memcached
# (the cache filter).
proxy_conf() {
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $P_PROXY
workers = 0
user = $(id -un)
swift_dir = $W/etc
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_reauth_tester = testing .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$P_MEMCACHED
EOF
  local f
  for f in catch_errors gatekeeper healthcheck proxy-logging:proxy_logging listing_formats s3api copy slo dlo versioned_writes; do
    printf '[filter:%s]\nuse = egg:swift#%s\n' "${f%%:*}" "${f##*:}"
  done
}

proxy_current() { proxy_conf | cmp -s - "$W/etc/proxy-server.conf"; }

# Rings and storage-server configs in DIR/etc, made once (the ports are kept in DIR/ports); the proxy's config is
# rewritten when this script's differs.
configure() {
  local t n p me
  me=$(id -un)
  if [ ! -f "$W/etc/account.ring.gz" ] || [ ! -f "$W/ports" ]; then
    rm -rf "$W/etc"
    mkdir -p "$W/etc" "$W/srv/d1" "$W/run"
    for t in object:$P_OBJECT container:$P_CONTAINER account:$P_ACCOUNT; do
      n=${t%%:*} p=${t##*:}
      swift-ring-builder "$W/etc/$n.builder" create 10 1 1 >/dev/null
      swift-ring-builder "$W/etc/$n.builder" add "r1z1-127.0.0.1:$p/d1" 1 >/dev/null
      swift-ring-builder "$W/etc/$n.builder" rebalance >/dev/null
      cat >"$W/etc/$n-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $p
workers = 0
user = $me
swift_dir = $W/etc
devices = $W/srv
mount_check = false
[pipeline:main]
pipeline = $n-server
[app:$n-server]
use = egg:swift#$n
EOF
    done
    echo "$base" >"$W/ports"
  fi
  proxy_current || proxy_conf >"$W/etc/proxy-server.conf"
}

start() {
  if ready && proxy_current; then report; return 0; fi
  install_if_missing
  # Swift reads swift.conf from /etc/swift whatever swift_dir says; the package ships one.
  if [ ! -f /etc/swift/swift.conf ]; then
    if [ "$(id -u)" = 0 ]; then
      mkdir -p /etc/swift
      printf '[swift-hash]\nswift_hash_path_suffix = changeme\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n' >/etc/swift/swift.conf
    else
      echo "/etc/swift/swift.conf is missing (it comes with the swift package)" >&2
      exit 1
    fi
  fi
  # Half-running from an earlier start: begin again.
  stop_servers
  local p n me
  for p in $P_PROXY $P_OBJECT $P_CONTAINER $P_ACCOUNT $P_MEMCACHED; do
    if port_open "$p"; then
      echo "127.0.0.1:$p is taken by another process; stop it or set TROVE_SWIFT_PORT_BASE" >&2
      exit 1
    fi
  done
  configure
  mkdir -p "$W/run" "$W/srv/d1"
  me=$(id -un)
  setsid memcached -l 127.0.0.1 -p "$P_MEMCACHED" -U 0 -m 64 -u "$me" >"$W/run/memcached.log" 2>&1 </dev/null 9>&- &
  echo $! >"$W/run/memcached.pid"
  for n in object container account proxy; do
    setsid "swift-$n-server" "$W/etc/$n-server.conf" -v >"$W/run/$n.log" 2>&1 </dev/null 9>&- &
    echo $! >"$W/run/$n.pid"
  done
  for _ in $(seq 300); do
    if ready; then report; return 0; fi
    for n in $SERVERS; do
      alive "$n" || { echo "swift: $n exited; its log:" >&2; tail -n 20 "$W/run/$n.log" >&2; stop_servers; exit 1; }
    done
    sleep 0.1
  done
  echo "swift did not become ready in 30 s; logs in $W/run" >&2
  stop_servers
  exit 1
}

exec 9>"$W/lock"
flock 9
case $cmd in
  start) start ;;
  status) if ready; then report; else echo "swift is not running in $W" >&2; exit 1; fi ;;
  stop) stop_servers ;;
  *) usage ;;
esac
