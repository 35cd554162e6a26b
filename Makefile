# clonebot — the two commands a user needs, both as root on Debian 12:
#   make run    install what is missing, build, run clonebotd in the foreground
#   make test   install what is missing, run every test
SHELL      := /bin/bash
GO         ?= go
BIN        := bin
VERSION    ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X github.com/clonebot/clonebot/clone.Version=$(VERSION)
GOFLAGS_B  := -trimpath -ldflags '$(LDFLAGS)'
# Static binaries: they also run inside the test VM.
export CGO_ENABLED := 0
# Arguments for `make run`, e.g. make run ARGS='--log-level debug'.
ARGS       ?=
# Fuzz budget per target: a count ("200000x") by default, because Go < 1.27
# can fail a duration-bounded run at its deadline with no crasher
# (golang/go#75804). make fuzz FUZZTIME=5m runs longer, by the clock.
FUZZTIME   ?= 200000x
# make install puts the binaries in $(PREFIX)/bin.
PREFIX     ?= /usr/local

.PHONY: all deps build run test test-unit test-integration bench fuzz vet clean install vm-image test-vm bench-vm

all: build

deps:
	@bash scripts/deps.sh

build:
	$(GO) build $(GOFLAGS_B) -o $(BIN)/clonebotd ./cmd/clonebotd
	$(GO) build $(GOFLAGS_B) -o $(BIN)/clonebotctl ./cmd/clonebotctl

run: deps build
	./$(BIN)/clonebotd $(ARGS)

vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...

# Every test: unit tests, bounded fuzzing of parsers and decoders, the
# end-to-end tests against real servers, real CRIU and the real kernel, and
# the VM suite in a two-NUMA-node guest (test-vm; docs/VM.md has its times).
test: deps build vet test-unit fuzz test-integration test-vm

test-unit:
	$(GO) test -count=1 -timeout 5m $$($(GO) list ./... | grep -v /integration)

# The runner's tests and the systemd guest's run in test-vm only.
VM_ONLY_TESTS = ^TestVM(Runner|Systemd.*|Clone.*Service)$$

test-integration:
	CLONEBOT_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -v -skip '$(VM_ONLY_TESTS)' ./integration/ 2>&1 | scripts/test-summary.sh

# Each fuzz target runs FUZZTIME (make fuzz FUZZTIME=5000000x for a longer run).
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

# Benchmarks: clonebot against the raw CRIU CLI sequence, interleaved in one
# run; the table goes to docs/BENCHMARKS.md.
# The pre-copy benchmark needs soft-dirty tracking, which CI hosts lack: it
# runs in the test VM (bench-vm, docs/BENCHMARKS-VM.md).
bench: deps build
	CLONEBOT_BIN=$(CURDIR)/$(BIN) CLONEBOT_BENCH_REPORT=$(CURDIR)/docs/BENCHMARKS.md \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./integration/
	$(MAKE) bench-vm

bench-vm: build
	GO=$(GO) bash integration/vm/bench-vm.sh

# The test VM (docs/VM.md): Debian 12, two NUMA nodes, pure cgroup v2.
# vm-image builds its image once into /var/cache/clonebot/vm/<key> (the key
# hashes the files that define it); test-vm boots it (KVM, else TCG) and runs
# the VM suite there (the VM-only tests and the host tests the VM proves more
# of), then clonebotd as a systemd service.
# Both need the host's CRIU 4.2.1 (deps) for the image; the VM scripts
# install qemu-system-x86, debootstrap and e2fsprogs when missing.
vm-image: deps
	bash integration/vm/build-image.sh

test-vm: deps build
	GO=$(GO) bash integration/vm/test-vm.sh

# The binaries to $(PREFIX)/bin, the unit to /etc/systemd/system, the group
# whose members may use the API; then: systemctl enable --now clonebotd.
install: build
	install -D -m 0755 $(BIN)/clonebotd $(DESTDIR)$(PREFIX)/bin/clonebotd
	install -D -m 0755 $(BIN)/clonebotctl $(DESTDIR)$(PREFIX)/bin/clonebotctl
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|' dist/clonebotd.service >$(DESTDIR)/etc/systemd/system/clonebotd.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/clonebotd.service
	@if [ -z "$(DESTDIR)" ]; then \
		getent group clonebot >/dev/null || groupadd --system clonebot; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "installed; start it with: systemctl enable --now clonebotd"; \
	fi

clean:
	rm -rf $(BIN)
