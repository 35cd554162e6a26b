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

.PHONY: all deps build run test test-unit test-integration bench fuzz vet clean install

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

# Every test: unit tests, bounded fuzzing of parsers and decoders, and the
# end-to-end tests against real servers, real CRIU and the real kernel.
test: deps build vet test-unit fuzz test-integration

test-unit:
	$(GO) test -count=1 -timeout 5m $$($(GO) list ./... | grep -v /integration)

test-integration:
	CLONEBOT_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m -v ./integration/ 2>&1 | scripts/test-summary.sh

# Each fuzz target runs FUZZTIME (make fuzz FUZZTIME=5000000x for a longer run).
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

# Benchmarks: clonebot against the raw CRIU CLI sequence, interleaved in one
# run; the table goes to docs/BENCHMARKS.md.
bench: deps build
	CLONEBOT_BIN=$(CURDIR)/$(BIN) CLONEBOT_BENCH_REPORT=$(CURDIR)/docs/BENCHMARKS.md \
		$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./integration/

clean:
	rm -rf $(BIN)
