# Bulwark build and test entry points. `make test` is the README's test command
# and what .ci/run calls.

GO ?= go
BIN := bin/bulwark
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin

.PHONY: all build test test-unit test-e2e deps proto proto-check vet fmt-check bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/bulwark

## deps installs what the tests need when it is missing (as root: apt packages).
deps:
	./scripts/deps.sh

proto:
	PATH="$(GOBIN_DIR):$$PATH" protoc --proto_path=api/v1alpha1 \
		--go_out=api/v1alpha1 --go_opt=paths=source_relative \
		--go-grpc_out=api/v1alpha1 --go-grpc_opt=paths=source_relative \
		api/v1alpha1/bulwark.proto

## proto-check fails when the committed generated code is stale.
proto-check: proto
	git diff --exit-code -- api/v1alpha1

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

test-e2e:
	$(GO) test -count=1 -timeout 15m ./test/e2e/...

## test is the one command that runs everything CI runs.
test: deps fmt-check vet proto-check test-unit test-e2e

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

clean:
	rm -rf bin
