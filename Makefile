# vern — common tasks. `make run` starts the whole suite; `make test` runs every test.
CARGO ?= cargo
# PostgreSQL for the store and end-to-end tests (set VERN_TEST_DATABASE_URL= to skip them locally).
VERN_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
export VERN_TEST_DATABASE_URL

.PHONY: run test lint fmt build clean browser-deps

## run: start vern dev (gateway + six services on SQLite in ./vern-data, gateway on 127.0.0.1:50051)
run:
	$(CARGO) run -p vern-cli --bin vern -- dev

## test: unit, store (SQLite and PostgreSQL) and end-to-end tests
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## browser-deps: chromium, chromedriver, axe-core and the test OpenID provider for the
## console's browser tests (skipped, with the reason, without them)
browser-deps:
	scripts/browser-deps.sh

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## build: release build of the vern binary
build:
	$(CARGO) build --release -p vern-cli --bin vern

clean:
	$(CARGO) clean
