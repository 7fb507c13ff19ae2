# local-ipam — build, test, benchmark and demo.
# Every target works on a fresh machine with Go installed; `make test` needs root for the
# network-namespace end-to-end tests (they are skipped, with the reason printed, otherwise).

GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.buildVersion=$(VERSION)
PREFIX  ?= /opt/cni/bin

# Peer binaries built from the pinned modules in go.mod (tool directives): the reference
# host-local for differential tests and benchmarks, bridge/macvlan and cnitool for e2e,
# and portmap/firewall/tuning, which every network `podman network create` writes names
# (test/podman).
PEERS := host-local bridge macvlan cnitool portmap firewall tuning
PEER_PKGS := github.com/containernetworking/plugins/plugins/ipam/host-local \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/main/macvlan \
	github.com/containernetworking/cni/cnitool \
	github.com/containernetworking/plugins/plugins/meta/portmap \
	github.com/containernetworking/plugins/plugins/meta/firewall \
	github.com/containernetworking/plugins/plugins/meta/tuning

.PHONY: all build peers test test-short bench stress fuzz demo install fmt vet clean

all: build

# local-ipam (disk store) and local-ipam-etcd (the same plus the etcd store; local-ipam
# hands etcd networks to it). Two binaries: the etcd client would triple local-ipam's
# start-up time. local-ipam-metrics writes `usage --format prometheus` (the Prometheus
# libraries, kept out of the plugin for the same reason).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/local-ipam ./cmd/local-ipam
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/local-ipam-etcd ./cmd/local-ipam-etcd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/local-ipam-metrics ./cmd/local-ipam-metrics

peers:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(PEER_PKGS)

vet:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The whole suite: unit, exec-level, differential against host-local, concurrency and
# end-to-end in network namespaces. -race on everything; -p 1 so that
# the process-heavy tests (e2e, compat) each leave the machine to themselves.
test: build peers vet
	LOCAL_IPAM_BIN_DIR=$(BIN) $(GO) test -race -count=1 -p 1 -timeout 40m ./...

test-short: build peers
	LOCAL_IPAM_BIN_DIR=$(BIN) $(GO) test -short -count=1 ./...

bench: build peers
	$(GO) run ./test/bench -bin-dir $(BIN)

# The reliability suite (docs/RELIABILITY.md): load, SIGKILL at random instants, full and
# read-only disks, damaged stores, hostile input; local-ipam and host-local side by side.
# Its short version runs in `make test`. Root for the mounts.
stress: build peers
	$(GO) run ./test/stress -bin-dir $(BIN)

# Each fuzz target for FUZZTIME (the committed corpora replay in `make test`).
FUZZTIME ?= 10m
fuzz:
	@for t in pkg/config:FuzzLoad pkg/config:FuzzAgreesWithHostLocal pkg/config:FuzzExamine pkg/ranges:FuzzWalk \
		pkg/ranges:FuzzExclusions pkg/ranges:FuzzParse pkg/ranges:FuzzUint128 pkg/store:FuzzParseKey \
		internal/bitmap:FuzzBitmap \
		pkg/store/disk:FuzzRecordName pkg/store/disk:FuzzState pkg/store/disk:FuzzOwnerCodec \
		pkg/store/disk:FuzzOwnerTable pkg/store/disk:FuzzOwnerTableFile pkg/store/disk:FuzzPage \
		pkg/store/etcd:FuzzKeyNames; do \
		echo "== $$t"; $(GO) test -run XXX -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 20x -parallel 1 ./$${t%%:*} || exit 1; done

demo: build
	@./scripts/demo.sh $(BIN)/local-ipam

# `local-ipam install`: each binary by an atomic rename, safe while runtimes run plugins.
# INSTALL_AS=host-local also installs local-ipam as host-local (docs/RUNTIMES.md).
INSTALL_AS ?=
install: build
	install -d $(DESTDIR)$(PREFIX)
	$(BIN)/local-ipam install --dir $(DESTDIR)$(PREFIX)$(if $(INSTALL_AS), --as $(INSTALL_AS))

clean:
	rm -rf $(BIN)
