#!/usr/bin/env bash
# Builds every guest in this workspace and copies each component to
# components/build/<package-name>.wasm. This is the one supported way to build
# the guests; the justfile, CI and the host's tests all call it.
#
# Usage: components/build.sh            build every guest (from any directory)
#        components/build.sh --faults   also build the order handler's fault
#                                       builds into build/faults/ (for
#                                       `just loadtest canary`)
#        components/build.sh --tools    only say which route and tools a build
#                                       would use; exits 1 if one is missing
#
# Two routes, picked in this order (SWITCHYARD_GUEST_ROUTE=standard|fallback
# forces one):
#
# 1. Standard route: the rustup toolchain with its wasm32-wasip2 target,
#      cargo build --release --locked --target wasm32-wasip2
#    as any wit-bindgen guest is built. When rustup is present and the target
#    is not installed, `rustup target add wasm32-wasip2` is tried once, under
#    a timeout; the fallback is taken only when that fails, and the script
#    says so. The toolchain links with the wasm-component-ld in its own sysroot.
#
# 2. Fallback route, for machines where rustup cannot download a target:
#    Debian's rustc-web (1.96) builds std from its sources (rust-web-src) for
#    wasm32-unknown-unknown (-Z build-std). The guests import no WASI there, so
#    the component needs no adapter. The first build compiles std (a few
#    minutes); later builds reuse it while the flags below and RUSTFLAGS (kept
#    unset) stay the same. Debian ships no wasm-component-ld, so the linkers
#    are found in this order, and the script names the one it uses:
#      wasm-component-ld: PATH, else the rustup toolchain's sysroot copy, else
#        `cargo install wasm-component-ld --locked` at the pinned version below
#        into $SWITCHYARD_TOOLS_DIR (default: ~/.cache/switchyard/tools);
#      wasm-ld: PATH, else the rustup toolchain's sysroot copy (gcc-ld/), else
#        Debian's lld.
#    Missing Debian packages are installed with apt-get when running as root,
#    under `timeout` so an unreachable mirror cannot hang the build.
#
# SWITCHYARD_NO_INSTALL=1 installs nothing (no rustup target, apt package or
# cargo install) and reports what is missing instead; `just doctor` uses it.
# SWITCHYARD_NO_APT=1 leaves only the system's packages alone.
#
# Cargo output goes to $CARGO_TARGET_DIR if set, else components/target.
# Crates come from crates.io through cargo, pinned by the committed Cargo.lock.

set -euo pipefail

readonly FALLBACK_PACKAGES=(rustc-web cargo-web rust-web-src)
readonly DEBIAN_RUSTC=/usr/bin/rustc
readonly DEBIAN_CARGO=/usr/bin/cargo
readonly DEBIAN_STD_SRC=/usr/lib/rustlib/src/rust/library
readonly DEBIAN_WASM_LD=/usr/bin/wasm-ld
# The version rustup's 1.95 toolchain carries; newer ones need a newer rustc.
readonly WASM_COMPONENT_LD_VERSION=0.5.21
# The eight bytes that open a component (a core module has 01 00 00 00).
readonly COMPONENT_HEADER=0061736d0d000100
# The order handler's deliberate faults (features fault-NAME), one build each.
readonly FAULTS=(trap trap-tenth fuel slow)

components_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$components_dir/build"
tools_dir=${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/tools}
no_install=${SWITCHYARD_NO_INSTALL:-0}
route_choice=${SWITCHYARD_GUEST_ROUTE:-auto}

mode=build
faults=0
case "${1:-}" in
    "") ;;
    --faults) faults=1 ;;
    --tools) mode=tools ;;
    *)
        echo "usage: components/build.sh [--faults | --tools]" >&2
        exit 2
        ;;
esac

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

say() {
    echo "build.sh: $*" >&2
}

may_install() {
    [[ $no_install != 1 ]]
}

may_apt_install() {
    may_install && [[ ${SWITCHYARD_NO_APT:-0} != 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1
}

# --- standard route ---------------------------------------------------------

has_rustup() {
    command -v rustup >/dev/null 2>&1
}

has_wasip2_target() {
    local installed
    # Never let rustup install a toolchain (a download) just to answer this.
    installed=$(RUSTUP_AUTO_INSTALL=0 timeout 60 rustup target list --installed 2>/dev/null) || return 1
    grep -qx wasm32-wasip2 <<<"$installed"
}

# True when the standard route can build: the target is there, or rustup
# could add it now. Says why not otherwise.
standard_route_ready() {
    has_rustup || {
        say "no rustup on PATH, so no wasm32-wasip2 target"
        return 1
    }
    has_wasip2_target && return 0
    if ! may_install; then
        say "rustup has no wasm32-wasip2 target (add it with: rustup target add wasm32-wasip2)"
        return 1
    fi
    say "adding the wasm32-wasip2 target: rustup target add wasm32-wasip2"
    if RUSTUP_AUTO_INSTALL=0 timeout 120 rustup target add wasm32-wasip2 >&2 && has_wasip2_target; then
        return 0
    fi
    say "rustup could not add wasm32-wasip2 (no download, or timed out after 120 s); taking the fallback route"
    return 1
}

# --- fallback route: tools --------------------------------------------------

# The bin/ directory of the rustup toolchain's sysroot, where rustup ships
# wasm-component-ld and (under gcc-ld/) wasm-ld. Empty when there is none.
rustup_tools_dir() {
    local rustc sysroot host
    has_rustup || return 0
    rustc=$(RUSTUP_AUTO_INSTALL=0 rustup which rustc 2>/dev/null) || return 0
    sysroot=$("$rustc" --print sysroot 2>/dev/null) || return 0
    host=$("$rustc" -vV 2>/dev/null | sed -n 's/^host: //p')
    [[ -n $host && -d $sysroot/lib/rustlib/$host/bin ]] && echo "$sysroot/lib/rustlib/$host/bin"
    return 0
}

runs() {
    [[ -x $1 ]] && "$1" --version >/dev/null 2>&1
}

cargo_install_component_ld() {
    local cargo
    cargo=$(command -v cargo 2>/dev/null || echo "$DEBIAN_CARGO")
    [[ -x $cargo ]] || return 1
    say "installing wasm-component-ld $WASM_COMPONENT_LD_VERSION: cargo install wasm-component-ld --locked --root $tools_dir"
    timeout 900 "$cargo" install wasm-component-ld --locked --version "$WASM_COMPONENT_LD_VERSION" \
        --root "$tools_dir" >&2
}

# Prints the wasm-component-ld to link with and says where it came from.
find_wasm_component_ld() {
    local found rustup_dir cached="$tools_dir/bin/wasm-component-ld"
    if found=$(command -v wasm-component-ld 2>/dev/null) && runs "$found"; then
        say "wasm-component-ld: $found (PATH)"
    elif rustup_dir=$(rustup_tools_dir) && [[ -n $rustup_dir ]] && runs "$rustup_dir/wasm-component-ld"; then
        found="$rustup_dir/wasm-component-ld"
        say "wasm-component-ld: $found (the rustup toolchain's sysroot)"
    elif runs "$cached" || { may_install && cargo_install_component_ld && runs "$cached"; }; then
        found=$cached
        say "wasm-component-ld: $found (cargo install, version $WASM_COMPONENT_LD_VERSION)"
    else
        say "wasm-component-ld not found on PATH, in a rustup toolchain or in $tools_dir;"
        say "  install it with: cargo install wasm-component-ld --locked --version $WASM_COMPONENT_LD_VERSION --root $tools_dir"
        return 1
    fi
    echo "$found"
}

install_packages() {
    local apt=(timeout 900 apt-get -o DPkg::Lock::Timeout=60 install -y --no-install-recommends "$@")
    export DEBIAN_FRONTEND=noninteractive
    say "installing $* with apt-get"
    # Only refresh the package lists when the install fails: usually they are
    # current, and `apt-get update` is the slow, network-bound part. Output
    # goes to stderr because stdout is reserved for the tools' paths.
    "${apt[@]}" >&2 && return 0
    timeout 300 apt-get update >&2 || return 1
    "${apt[@]}" >&2
}

# Prints the wasm-ld that wasm-component-ld runs, and says where it came from.
find_wasm_ld() {
    local found rustup_dir
    if found=$(command -v wasm-ld 2>/dev/null) && runs "$found"; then
        say "wasm-ld: $found (PATH)"
    elif rustup_dir=$(rustup_tools_dir) && [[ -n $rustup_dir ]] && runs "$rustup_dir/gcc-ld/wasm-ld"; then
        found="$rustup_dir/gcc-ld/wasm-ld"
        say "wasm-ld: $found (the rustup toolchain's sysroot)"
    elif may_apt_install && install_packages lld && runs "$DEBIAN_WASM_LD"; then
        found=$DEBIAN_WASM_LD
        say "wasm-ld: $found (Debian's lld)"
    else
        say "wasm-ld not found on PATH or in a rustup toolchain; install it with: apt-get install lld"
        return 1
    fi
    echo "$found"
}

fallback_compiler_missing() {
    local missing=()
    "$DEBIAN_RUSTC" --version >/dev/null 2>&1 || missing+=("$DEBIAN_RUSTC (rustc-web)")
    [[ -x $DEBIAN_CARGO ]] || missing+=("$DEBIAN_CARGO (cargo-web)")
    [[ -d $DEBIAN_STD_SRC ]] || missing+=("$DEBIAN_STD_SRC (rust-web-src)")
    if ((${#missing[@]})); then
        printf '%s\n' "${missing[@]}"
    fi
}

ensure_fallback_compiler() {
    local missing
    missing=$(fallback_compiler_missing)
    [[ -z $missing ]] && return 0
    say "the fallback route's compiler lacks:"
    sed 's/^/  /' <<<"$missing" >&2
    if may_apt_install; then
        install_packages "${FALLBACK_PACKAGES[@]}" || die "apt-get could not install ${FALLBACK_PACKAGES[*]}"
        missing=$(fallback_compiler_missing)
        [[ -z $missing ]] || die "still missing after apt-get: $(paste -sd, - <<<"$missing")"
    else
        say "install them with: apt-get install ${FALLBACK_PACKAGES[*]} (or use rustup: rustup target add wasm32-wasip2)"
        return 1
    fi
}

# --- the build --------------------------------------------------------------

pick_route() {
    case $route_choice in
        standard)
            standard_route_ready || die "the standard route was asked for (SWITCHYARD_GUEST_ROUTE=standard) and cannot build"
            echo standard
            ;;
        fallback) echo fallback ;;
        auto) if standard_route_ready; then echo standard; else echo fallback; fi ;;
        *) die "SWITCHYARD_GUEST_ROUTE must be auto, standard or fallback, not '$route_choice'" ;;
    esac
}

route=$(pick_route) || exit 1
if [[ $route == standard ]]; then
    say "standard route ($(rustc --version), wasm32-wasip2)"
else
    # Every missing piece is named before giving up, not just the first.
    ready=1
    ensure_fallback_compiler || ready=0
    component_ld=$(find_wasm_component_ld) || ready=0
    wasm_ld=$(find_wasm_ld) || ready=0
    ((ready)) || exit 1
    say "fallback route ($("$DEBIAN_RUSTC" --version), build-std, wasm32-unknown-unknown)"
fi
[[ $mode == tools ]] && exit 0

# Runs the build for the route, with any extra cargo arguments (a package
# and its features). Stdout carries cargo's JSON messages, from which the
# produced components are taken; diagnostics still go to stderr.
cargo_build() {
    if [[ $route == standard ]]; then
        cargo build --release --locked --target wasm32-wasip2 --message-format=json-render-diagnostics "$@"
    else
        # These exact flags are part of build-std's fingerprint: change them
        # and std is rebuilt from source. wasm-component-ld runs the wasm-ld
        # it finds on PATH.
        env -u RUSTFLAGS PATH="$(dirname "$wasm_ld"):$PATH" RUSTC="$DEBIAN_RUSTC" RUSTC_BOOTSTRAP=1 \
            "$DEBIAN_CARGO" build \
            --release --locked --target wasm32-unknown-unknown \
            -Z build-std=std,panic_abort \
            --config "target.wasm32-unknown-unknown.linker=\"$component_ld\"" \
            --message-format=json-render-diagnostics "$@"
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

# Prints `name path` for every component in cargo's messages on stdin: one
# compiler-artifact message per cdylib of the build, fresh or not.
artifacts() {
    local line package_id wasm
    while IFS= read -r line; do
        [[ $line == *'"reason":"compiler-artifact"'* && $line == *'"crate_types":["cdylib"]'* ]] || continue
        package_id=$(sed -E 's/.*"package_id":"([^"]*)".*/\1/' <<<"$line")
        wasm=$(grep -oE '"filenames":\["[^"]*\.wasm"' <<<"$line" | sed -E 's/.*\["//; s/"$//') ||
            die "no .wasm file in the artifact of $package_id"
        is_component "$wasm" || die "$wasm is not a component (expected header $COMPONENT_HEADER)"
        echo "$(package_name "$package_id") $wasm"
    done
}

# Copies a built component to `dest`: by rename, and only on change, so a
# process watching build/ never reads a half-written file or redeploys an
# unchanged component.
install_component() {
    local wasm=$1 dest=$2
    if ! cmp -s "$wasm" "$dest"; then
        cp "$wasm" "$dest.tmp"
        mv -f "$dest.tmp" "$dest"
    fi
    is_component "$dest" || die "$dest is not a component"
}

messages=$(mktemp)
components=$(mktemp)
trap 'rm -f "$messages" "$components"' EXIT
cargo_build >"$messages"
artifacts <"$messages" >"$components"

mkdir -p "$out_dir"
built=()
while read -r name wasm; do
    install_component "$wasm" "$out_dir/$name.wasm"
    built+=("$name.wasm")
done <"$components"

((${#built[@]})) || die "cargo reported no components"

# Components of crates that left the workspace would otherwise linger.
for existing in "$out_dir"/*.wasm; do
    [[ -e $existing ]] || continue
    if ! grep -qxF "${existing##*/}" <<<"$(printf '%s\n' "${built[@]}")"; then
        rm -f "$existing"
    fi
done

# The fault builds come last: cargo links each over the same output file,
# and the next plain build links the plain one back.
if ((faults)); then
    mkdir -p "$out_dir/faults"
    for fault in "${FAULTS[@]}"; do
        cargo_build -p order-handler --features "fault-$fault" >"$messages"
        artifacts <"$messages" >"$components"
        read -r _ wasm <"$components" || die "cargo reported no order handler for fault-$fault"
        install_component "$wasm" "$out_dir/faults/order-handler-$fault.wasm"
        built+=("faults/order-handler-$fault.wasm")
    done
fi

mapfile -t built < <(printf '%s\n' "${built[@]}" | sort)
for name in "${built[@]}"; do
    printf '%-36s %8d bytes\n' "build/$name" "$(stat -c %s "$out_dir/$name")"
done
