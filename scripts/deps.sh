#!/usr/bin/env bash
# Installs what `make test` needs when it is missing: protoc (Debian's
# protobuf-compiler), chromium for the dashboard's browser tests, and the
# pinned protoc plugins. apt needs root; without it
# a missing package is an error that says what to install.
set -euo pipefail

gobin="$(go env GOPATH)/bin"

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The dashboard's browser tests drive Debian's chromium (chromedp).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) or run as root" >&2
    exit 1
  fi
  echo "deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q "${need_apt[@]}" >/dev/null
  }
fi

if ! "$gobin/protoc-gen-go" --version 2>/dev/null | grep -q 'v1.36.12'; then
  echo "deps: installing protoc-gen-go v1.36.12"
  go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
fi
if ! "$gobin/protoc-gen-go-grpc" --version 2>/dev/null | grep -q '1.5.1'; then
  echo "deps: installing protoc-gen-go-grpc v1.5.1"
  go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
fi
