# Switchyard tasks. `just run` serves the reference app; `just test` runs
# everything CI checks.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build outputs of the host workspace; override to share a cache between clones.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")

# List the recipes.
default:
    @just --list

# Build every guest component into components/build/.
components:
    components/build.sh

# Build components and host, then serve the reference app on 127.0.0.1:8080 (SQLite).
run: components
    cargo build -p switchyard
    "$CARGO_TARGET_DIR/debug/switchyard" serve --config switchyard.toml --log-format pretty

# Validate switchyard.toml and every component it names, without serving.
check: components
    cargo run -q -p switchyard -- check --config switchyard.toml

# Everything CI checks: formatting, lints, unit and integration tests.
test: components
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# Instantiate + call latency of the order handler and a trivial fixture.
bench-invoke: components
    cargo bench -p switchyard --bench invoke

# Format the host workspace.
fmt:
    cargo fmt --all

# Lint the host workspace.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
