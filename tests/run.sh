#!/usr/bin/env bash
# The one test command (see README): installs what is missing, starts what must run, then runs
# fmt --check, clippy -D warnings, rustdoc without warnings and the whole suite under nextest.
# Extra arguments go to `cargo nextest run` (e.g. a test filter).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# One build cache for every clone on this machine (speed only; everything is still built from source).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/trove-rs-target}"

log() { printf '== %s\n' "$*"; }

# --- system packages: engines the product provisions, the infra store and the broker the adapters test against,
# openssl (instance certificates), python3-venv for the real OpenStack client, and Swift with memcached (its tempauth
# keeps tokens there) for the object-store adapters. Installed only when missing (and only as root on Debian).
missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client mariadb-backup)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # guests make self-signed instance certificates with it
command -v mariadb-backup >/dev/null 2>&1 || missing+=(mariadb-backup)   # MariaDB backups and restores (with mbstream)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)   # guests compress backup streams with it
[ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)   # MariaDB Galera cluster members (the wsrep provider)
command -v socat >/dev/null 2>&1 || missing+=(socat)   # Galera state transfers (mariabackup SST) stream through it
command -v swift-proxy-server >/dev/null 2>&1 || missing+=(swift swift-proxy swift-account swift-container swift-object)
command -v memcached >/dev/null 2>&1 || [ -x /usr/bin/memcached ] || missing+=(memcached)
command -v curl >/dev/null 2>&1 || missing+=(curl)   # tests/support/swift.sh checks readiness with it
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing packages: ${missing[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# --- services the adapters' tests use: PostgreSQL on 127.0.0.1:5432 (trust) and RabbitMQ on 5672.
# Started only when not answering; never stopped or reconfigured.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") >/dev/null 2>&1; }
if ! port_open 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! port_open 5672; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
fi
for p in 5432 5672; do
  port_open "$p" || { echo "nothing answers on 127.0.0.1:$p; start PostgreSQL (5432) / RabbitMQ (5672)" >&2; exit 1; }
done

# --- a private Swift (tempauth + s3api on 127.0.0.1) for the object-store adapters' tests, in the build cache's tmp
# directory, where those tests look for it. It starts in the background while fmt/clippy/doc run (4-7 s; instant when
# it already runs) and is left running for the next run; stop it with `tests/support/swift.sh stop "$TROVE_SWIFT_DIR"`.
export TROVE_SWIFT_DIR="${TROVE_SWIFT_DIR:-$CARGO_TARGET_DIR/tmp/swift}"
mkdir -p "$TROVE_SWIFT_DIR"
tests/support/swift.sh start "$TROVE_SWIFT_DIR" >"$TROVE_SWIFT_DIR/start.log" 2>&1 &
swift_start=$!

# --- toolchain bits
command -v cargo >/dev/null || { echo "cargo is required (install rustup)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked

log "fmt";    cargo fmt --all -- --check
log "clippy"; cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
log "doc";    RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features --quiet
if ! wait "$swift_start"; then
  cat "$TROVE_SWIFT_DIR/start.log" >&2
  echo "Swift could not be started in $TROVE_SWIFT_DIR (log above)" >&2
  exit 1
fi
log "tests"
cargo nextest run --workspace --all-features --no-fail-fast "$@"
