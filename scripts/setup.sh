#!/usr/bin/env bash
# Forklift development setup: Debian packages + release build of the extension.
# Idempotent: when everything is installed it only costs a cargo no-op build.
set -euo pipefail

cd "$(dirname "$0")/.."

PACKAGES=(php8.2-cli php8.2-dev clang libclang-dev phpunit php8.2-igbinary php8.2-sqlite3 php8.2-mysql gcc make systemd php-monolog php-psr-log sqlite3
    php8.2-redis php-pda-pheanstalk php-doctrine-dbal
    php-symfony-messenger php-symfony-console php-symfony-event-dispatcher php-symfony-dependency-injection
    php-symfony-lock php-symfony-cache php-symfony-framework-bundle php-symfony-redis-messenger php-symfony-doctrine-messenger php-symfony-beanstalkd-messenger)
# promtool (checks the metrics text), and the servers the tests start on loopback with
# throw-away data directories (never as services): MariaDB, Redis, beanstalkd; without recommends.
LEAN_PACKAGES=(prometheus mariadb-server redis-server beanstalkd)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# 1. Debian packages --------------------------------------------------------
missing=()
lean_missing=()
for pkg in "${LEAN_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || lean_missing+=("$pkg")
done
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0 && ${#lean_missing[@]} == 0)); then
    say "packages: all $((${#PACKAGES[@]} + ${#LEAN_PACKAGES[@]})) present"
else
    say "packages: installing missing: ${missing[*]} ${lean_missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "not root and sudo is not available; as root run: apt-get update && apt-get install -y ${missing[*]}"
    fi
    "${SUDO[@]}" apt-get update -qq
    if ((${#missing[@]} > 0)); then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    if ((${#lean_missing[@]} > 0)); then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean_missing[@]}"
    fi
    say "packages: installed ${missing[*]} ${lean_missing[*]}"
fi

# 2. Rust toolchain ----------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"   # rustup install not on PATH yet
fi
if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found; install Rust with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh   (then: source \"\$HOME/.cargo/env\")"
fi
say "rust: $(cargo --version)"

# 3. Build the extension -------------------------------------------------------
say "build: cargo build --release"
cargo build --release --quiet
[[ -f target/release/libforklift.so ]] || die "build finished but target/release/libforklift.so is missing"
say "build: target/release/libforklift.so ready"
