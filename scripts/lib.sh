# Shared by scripts/serve, scripts/test and .ci/run: system packages and the
# cargo build cache. Sourced, not run.

# Build outputs live outside the clone so a fresh clone (and CI) reuses the
# first RocksDB build, which alone takes about ten minutes on two cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/serialsvc/target}"

# Installs the Debian packages the build needs when any is missing:
# RocksDB's bindings are generated with libclang.
ensure_build_packages() {
    local missing=()
    for package in clang libclang-dev; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    echo "installing system packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Installs Prometheus (which ships promtool) from Debian's packages when
# promtool is missing: the ops tests (server/tests/ops.rs) run a real
# Prometheus on loopback and check the alert rules with promtool. The package's
# own service is not needed (and is not started in containers).
ensure_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return 0
    fi
    echo "installing system packages: prometheus" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
