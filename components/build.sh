#!/usr/bin/env bash
# Builds every guest in this workspace and copies each component to
# components/build/<package-name>.wasm. This is the one supported way to build
# the guests; the justfile, CI and the host's tests all call it.
#
# Usage: components/build.sh          (from any directory)
#
# Two routes, picked automatically:
#
# 1. Standard route: when rustup has the wasm32-wasip2 target installed,
#      cargo build --release --locked --target wasm32-wasip2
#    with the rustup toolchain, as any wit-bindgen guest is built.
#
# 2. Fallback route: on machines where rustup cannot download a target, use
#    Debian's rustc-web (1.96) and build std from its sources (rust-web-src)
#    for wasm32-unknown-unknown. Debian's wasm-component-ld, which rustc finds
#    in its own sysroot, links with wasm-ld (lld) and wraps the core module
#    into a component. The guests import no WASI, so the component needs no
#    adapter. The first build compiles std (a few minutes); later builds reuse
#    it as long as the flags below and RUSTFLAGS (kept unset) stay the same.
#    Missing packages are installed with apt-get when running as root, under
#    `timeout` so an unreachable mirror cannot hang the build.
#
# Cargo output goes to $CARGO_TARGET_DIR if set, else components/target.
# Crates come from crates.io through cargo, pinned by the committed Cargo.lock.

set -euo pipefail

readonly FALLBACK_PACKAGES=(rustc-web cargo-web rust-web-src lld)
readonly DEBIAN_RUSTC=/usr/bin/rustc
readonly DEBIAN_CARGO=/usr/bin/cargo
readonly DEBIAN_STD_SRC=/usr/lib/rustlib/src/rust/library
# The eight bytes that open a component (a core module has 01 00 00 00).
readonly COMPONENT_HEADER=0061736d0d000100

components_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$components_dir/build"

# Resolve a relative CARGO_TARGET_DIR against the caller's directory, before
# the cd below changes what it would mean.
target_dir=${CARGO_TARGET_DIR:-$components_dir/target}
[[ $target_dir = /* ]] || target_dir="$PWD/$target_dir"
export CARGO_TARGET_DIR=$target_dir

# Cargo gives up on an unreachable registry instead of waiting forever.
export CARGO_HTTP_TIMEOUT=${CARGO_HTTP_TIMEOUT:-30}
export CARGO_NET_RETRY=${CARGO_NET_RETRY:-2}

cd "$components_dir"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

has_wasip2_target() {
    local installed
    # Never let rustup install a toolchain (a download) just to answer this.
    installed=$(RUSTUP_AUTO_INSTALL=0 timeout 60 rustup target list --installed 2>/dev/null) || return 1
    grep -qx wasm32-wasip2 <<<"$installed"
}

fallback_missing() {
    local missing=()
    "$DEBIAN_RUSTC" --version >/dev/null 2>&1 || missing+=("$DEBIAN_RUSTC (rustc-web)")
    [[ -x $DEBIAN_CARGO ]] || missing+=("$DEBIAN_CARGO (cargo-web)")
    [[ -d $DEBIAN_STD_SRC ]] || missing+=("$DEBIAN_STD_SRC (rust-web-src)")
    command -v wasm-ld >/dev/null 2>&1 || missing+=("wasm-ld (lld)")
    if ((${#missing[@]})); then
        printf '%s\n' "${missing[@]}"
    fi
}

install_fallback_packages() {
    local apt=(timeout 900 apt-get -o DPkg::Lock::Timeout=60 install -y --no-install-recommends "${FALLBACK_PACKAGES[@]}")
    export DEBIAN_FRONTEND=noninteractive
    echo "build.sh: installing ${FALLBACK_PACKAGES[*]} with apt-get" >&2
    # Only refresh the package lists when the install fails: usually they are
    # current, and `apt-get update` is the slow, network-bound part. Output
    # goes to stderr because stdout is reserved for cargo's messages.
    "${apt[@]}" >&2 && return 0
    timeout 300 apt-get update >&2 || return 1
    "${apt[@]}" >&2
}

ensure_fallback_toolchain() {
    local missing
    missing=$(fallback_missing)
    [[ -z $missing ]] && return 0
    echo "build.sh: no wasm32-wasip2 rustup target, and the fallback toolchain lacks:" >&2
    sed 's/^/  /' <<<"$missing" >&2
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        install_fallback_packages || die "apt-get could not install ${FALLBACK_PACKAGES[*]}"
        missing=$(fallback_missing)
        [[ -z $missing ]] || die "still missing after apt-get: $(paste -sd, - <<<"$missing")"
    else
        die "either run 'rustup target add wasm32-wasip2', or install the Debian packages: apt-get install ${FALLBACK_PACKAGES[*]}"
    fi
}

# Runs the build for one route. Stdout carries cargo's JSON messages, from
# which the produced components are taken; diagnostics still go to stderr.
cargo_build() {
    if has_wasip2_target; then
        echo "build.sh: standard route (rustup, wasm32-wasip2)" >&2
        cargo build --release --locked --target wasm32-wasip2 --message-format=json-render-diagnostics
    else
        ensure_fallback_toolchain
        echo "build.sh: fallback route ($("$DEBIAN_RUSTC" --version), build-std, wasm32-unknown-unknown)" >&2
        # These exact flags are part of build-std's fingerprint: change them
        # and std is rebuilt from source.
        env -u RUSTFLAGS RUSTC="$DEBIAN_RUSTC" RUSTC_BOOTSTRAP=1 "$DEBIAN_CARGO" build \
            --release --locked --target wasm32-unknown-unknown \
            -Z build-std=std,panic_abort \
            --config 'target.wasm32-unknown-unknown.linker="wasm-component-ld"' \
            --message-format=json-render-diagnostics
    fi
}

# Package name of a cargo package id spec: `path+file:///…/hello#0.1.0`
# names the package after the directory, `…/fixtures/x#order-handler@0.1.0`
# names it explicitly.
package_name() {
    local fragment=${1##*#}
    if [[ $fragment == *@* ]]; then
        echo "${fragment%@*}"
    else
        local url=${1%#*}
        echo "${url##*/}"
    fi
}

is_component() {
    [[ $(od -An -tx1 -N8 "$1" | tr -d ' \n') == "$COMPONENT_HEADER" ]]
}

messages=$(mktemp)
trap 'rm -f "$messages"' EXIT
cargo_build >"$messages"

mkdir -p "$out_dir"
built=()
# One compiler-artifact message per cdylib of the workspace, fresh or not.
while IFS= read -r line; do
    [[ $line == *'"reason":"compiler-artifact"'* && $line == *'"crate_types":["cdylib"]'* ]] || continue
    package_id=$(sed -E 's/.*"package_id":"([^"]*)".*/\1/' <<<"$line")
    wasm=$(grep -oE '"filenames":\["[^"]*\.wasm"' <<<"$line" | sed -E 's/.*\["//; s/"$//') ||
        die "no .wasm file in the artifact of $package_id"
    name=$(package_name "$package_id")
    is_component "$wasm" || die "$wasm is not a component (expected header $COMPONENT_HEADER)"
    dest="$out_dir/$name.wasm"
    # Replace by rename, and only on change, so a process watching build/
    # never reads a half-written file or redeploys an unchanged component.
    if ! cmp -s "$wasm" "$dest"; then
        cp "$wasm" "$out_dir/.$name.wasm.tmp"
        mv -f "$out_dir/.$name.wasm.tmp" "$dest"
    fi
    is_component "$dest" || die "$dest is not a component"
    built+=("$name.wasm")
done <"$messages"

((${#built[@]})) || die "cargo reported no components"

# Components of crates that left the workspace would otherwise linger.
for existing in "$out_dir"/*.wasm; do
    [[ -e $existing ]] || continue
    if ! grep -qxF "${existing##*/}" <<<"$(printf '%s\n' "${built[@]}")"; then
        rm -f "$existing"
    fi
done

mapfile -t built < <(printf '%s\n' "${built[@]}" | sort)
for name in "${built[@]}"; do
    printf '%-24s %8d bytes\n' "build/$name" "$(stat -c %s "$out_dir/$name")"
done
