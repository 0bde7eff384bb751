#!/usr/bin/env bash
# The one test command (README): installs what is missing, starts what must run, then
# fmt --check, clippy -D warnings, docs without warnings, and the whole suite under nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# --- toolchain bits
if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup); install it first" >&2; exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== doc"; RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features --quiet
echo "== tests"
cargo nextest run --workspace --all-features --no-fail-fast "$@"
