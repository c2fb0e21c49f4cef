#!/usr/bin/env bash
# Build the Sluice guest filters (Proxy-Wasm, proxy-wasm-rust-sdk 0.2.5).
#
#   filters/build.sh            # all filters -> filters/out/<name>.wasm
#                               #   + headers for wasm32-wasip1 -> filters/out/wasip1/headers.wasm
#   filters/build.sh --no-wasip1  # skip the wasm32-wasip1 build
#   filters/build.sh --wasip1     # accepted for compatibility (wasip1 is built by default)
#   filters/build.sh --no-components  # skip the component-model guests
#
# Component-model guests (filters/components/, WASI 0.3 wasi:http): each crate is built as a
# core module for wasm32-unknown-unknown with wit-bindgen and the `wasip3` crate, then the
# host-side helper tools/componentize (wit-component) makes it a component:
#   -> filters/out/components/<name>.wasm
#
# Runnable from any cwd. Cargo's target dir is always filters/target.
#
# Toolchain selection, per target:
#   * if `rustup target list --installed` lists the target, the normal
#     `cargo build --release --target <t>` is used;
#   * otherwise the Debian offline path: /usr/bin/cargo + /usr/bin/rustc
#     (packages rustc-web, cargo-web, rust-web-src) with -Zbuild-std and
#     wasm-ld from lld-16; wasm32-wasip1 additionally needs wasi-libc.
#
# wasm32-unknown-unknown modules (the filters, the components' core modules) are built
# with 128-bit SIMD (`-C target-feature=+simd128`, std included through -Zbuild-std):
# `memchr`, `regex` and `aho-corasick` then scan with vector instructions. Wasm SIMD is
# standard since 2021 (wasmtime, V8 in Envoy); the WAF counts 6.6% fewer instructions
# a request with it (bench/README.md, issue #18's thirteenth round). SIMD=0 leaves it out.
set -euo pipefail

FILTERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="$FILTERS_DIR/out"
MANIFEST="$FILTERS_DIR/Cargo.toml"
export CARGO_TARGET_DIR="$FILTERS_DIR/target"

# crate name == output name (crate names already use underscores)
FILTERS=(headers respond body_rewrite props image callout ticker queue metrics state probe hostile router waf background ratelimit fleetkv)
WASIP1_FILTERS=(headers)

BUILD_WASIP1=1
BUILD_COMPONENTS=1
for arg in "$@"; do
    case "$arg" in
        --wasip1) BUILD_WASIP1=1 ;;
        --no-wasip1) BUILD_WASIP1=0 ;;
        --no-components) BUILD_COMPONENTS=0 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build.sh: error: $*" >&2; exit 1; }

# Does the rustup toolchain (as resolved from filters/) have std for $1?
rustup_has_target() {
    command -v rustup >/dev/null 2>&1 || return 1
    (cd "$FILTERS_DIR" && rustup target list --installed 2>/dev/null) | grep -qx "$1"
}

find_wasm_ld() {
    local c
    for c in "${WASM_LD:-}" /usr/lib/llvm-16/bin/wasm-ld /usr/bin/wasm-ld-16 \
             /usr/lib/llvm-*/bin/wasm-ld "$(command -v wasm-ld 2>/dev/null || true)"; do
        if [[ -n "$c" && -x "$c" ]]; then echo "$c"; return 0; fi
    done
    return 1
}

# build_target <triple> <crate>...   (MANIFEST: which workspace)
build_target() {
    local target="$1"; shift
    local pkgs=() p
    for p in "$@"; do pkgs+=(-p "$p"); done

    # Never let ambient flags leak into the wasm builds.
    unset CARGO_ENCODED_RUSTFLAGS
    local rustflags=""
    if [[ "$target" == wasm32-unknown-unknown && "${SIMD:-1}" != 0 ]]; then
        rustflags="-C target-feature=+simd128"
    fi

    if rustup_has_target "$target"; then
        echo "==> [$target] rustup toolchain: $(cd "$FILTERS_DIR" && rustc --version)"
        (cd "$FILTERS_DIR" && RUSTFLAGS="$rustflags" \
            cargo build --release --manifest-path "$MANIFEST" --target "$target" "${pkgs[@]}")
        return
    fi

    # --- Debian offline path ---
    local missing=()
    [[ -x /usr/bin/rustc ]] || missing+=(rustc-web)
    [[ -x /usr/bin/cargo ]] || missing+=(cargo-web)
    [[ -d /usr/lib/rustlib/src/rust/library ]] || missing+=(rust-web-src)
    local wasm_ld=""
    wasm_ld="$(find_wasm_ld)" || missing+=(lld-16)
    if [[ "$target" == wasm32-wasip1 ]]; then
        [[ -f /usr/lib/wasm32-wasi/libc.a ]] || missing+=(wasi-libc)
        rustflags="-C link-self-contained=no -L /usr/lib/wasm32-wasi"
    fi
    if ((${#missing[@]})); then
        die "rustup has no '$target' std and the Debian offline toolchain is incomplete.
       Install: apt-get install -y ${missing[*]}
       (or: rustup target add $target)"
    fi

    local target_env
    target_env="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"
    echo "==> [$target] Debian toolchain: $(/usr/bin/rustc --version), -Zbuild-std, linker $wasm_ld"
    (cd "$FILTERS_DIR" && env \
        RUSTC=/usr/bin/rustc \
        RUSTDOC=/usr/bin/rustdoc \
        RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="$rustflags" \
        "$target_env=$wasm_ld" \
        /usr/bin/cargo build --release --manifest-path "$MANIFEST" --target "$target" \
            -Zbuild-std=std,panic_abort "${pkgs[@]}")
}

copy_out() { # <triple> <dest dir> <crate>...
    local target="$1" dest="$2"; shift 2
    mkdir -p "$dest"
    local c
    for c in "$@"; do
        local src="$CARGO_TARGET_DIR/$target/release/$c.wasm"
        [[ -f "$src" ]] || die "expected build output missing: $src"
        cp -f "$src" "$dest/$c.wasm"
        OUTPUTS+=("$dest/$c.wasm")
    done
}

OUTPUTS=()
start=$SECONDS

build_target wasm32-unknown-unknown "${FILTERS[@]}"
copy_out wasm32-unknown-unknown "$OUT_DIR" "${FILTERS[@]}"

if ((BUILD_WASIP1)); then
    build_target wasm32-wasip1 "${WASIP1_FILTERS[@]}"
    copy_out wasm32-wasip1 "$OUT_DIR/wasip1" "${WASIP1_FILTERS[@]}"
fi

if ((BUILD_COMPONENTS)); then
    COMP_DIR="$FILTERS_DIR/components"
    COMPONENTS=(hello add_header deny transform hostile edge_info steer fleet_counter visits)
    # The standard WIT (wasi:http@0.3.0 and what it uses) comes from the pinned `wasip3`
    # crate the guests' bindings are generated from; it is copied, never committed.
    # (Debian's cargo where it is installed, as for the build; else the one on PATH)
    if [[ -x /usr/bin/cargo && -x /usr/bin/rustc ]]; then
        meta_cargo=(env RUSTC=/usr/bin/rustc /usr/bin/cargo)
    else
        meta_cargo=(cargo)
    fi
    (cd "$COMP_DIR" && "${meta_cargo[@]}" fetch --locked >/dev/null)
    wasip3_dir="$(cd "$COMP_DIR" && "${meta_cargo[@]}" metadata --locked --format-version 1 \
        | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="wasip3"))')"
    mkdir -p "$COMP_DIR/wit/deps"
    cp -f "$wasip3_dir"/wit/deps/*.wit "$COMP_DIR/wit/deps/"
    # The componentizer runs on the build machine: the workspace's own release build.
    (cd "$FILTERS_DIR/.." && CARGO_TARGET_DIR="$FILTERS_DIR/../target" cargo build --release --locked -p sluice-componentize)
    MANIFEST="$COMP_DIR/Cargo.toml" CARGO_TARGET_DIR="$COMP_DIR/target" \
        build_target wasm32-unknown-unknown "${COMPONENTS[@]}"
    mkdir -p "$OUT_DIR/components"
    for c in "${COMPONENTS[@]}"; do
        "$FILTERS_DIR/../target/release/componentize" \
            "$COMP_DIR/target/wasm32-unknown-unknown/release/$c.wasm" "$OUT_DIR/components/$c.wasm"
        OUTPUTS+=("$OUT_DIR/components/$c.wasm")
    done
fi

echo "==> built in $((SECONDS - start))s:"
for f in "${OUTPUTS[@]}"; do
    printf '  %8d  %s\n' "$(stat -c %s "$f")" "$f"
done
