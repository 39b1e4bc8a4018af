# The two commands a new user needs: `make run` (a single-node cluster) and
# `make test` (every test tier). Both install missing system packages when
# run as root (scripts/setup.sh).

CARGO ?= cargo
DATA_DIR ?=

.PHONY: run test setup build clippy bench

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --bin skiff

run: build
	./target/release/skiff server $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

test: setup
	$(CARGO) test --workspace --no-fail-fast

clippy:
	$(CARGO) clippy --workspace --all-targets

bench: build
	./target/release/skiff bench api
