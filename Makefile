# certgate: one Makefile. `make help` lists the targets.
BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
SAN      ?=
WERROR   ?=
V        ?=
Q         = $(if $(V),,@)
BSSL_INC  = /usr/include/android
# android-libboringssl installs into the multiarch directory (x86_64-linux-gnu,
# aarch64-linux-gnu, ...): ask dpkg, or the compiler when dpkg-dev is absent.
ifndef MULTIARCH
MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch 2>/dev/null)
endif
ifeq ($(strip $(MULTIARCH)),)
$(error cannot tell the Debian multiarch triplet: set MULTIARCH=x86_64-linux-gnu, or BSSL_LIB)
endif
BSSL_LIB ?= /usr/lib/$(MULTIARCH)/android
LLHTTP_SRC = /usr/share/llhttp
LLHTTP_INC = /usr/share/include/llhttp

WARN     = -Wall -Wextra -Wformat=2 -Wshadow -Wvla -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter $(WERROR)
CPPFLAGS = -D_GNU_SOURCE -I$(BSSL_INC) -I$(LLHTTP_INC) -Iproxy -Ica-store
CFLAGS   = -std=c11 $(OPT) -g -pthread $(WARN) $(SAN)
LDLIBS   = -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lssl -lcrypto -luv -lyaml -lnghttp2 -lpthread
LDFLAGS  = -pthread $(SAN)

# proxy/ is layered in folders (README "Architecture in one page",
# scripts/check-layers.py); proxy/main.c sits on top.
PROXY_SRC  = $(wildcard proxy/*/*.c)
PROXY_HDR  = $(wildcard proxy/*/*.h)
CA_SRC     = $(wildcard ca-store/*.c)
LIB_OBJ    = $(PROXY_SRC:%.c=$(BUILD)/%.o) $(CA_SRC:%.c=$(BUILD)/%.o) \
             $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
UNIT_SRC   = $(wildcard tests/unit/test_*.c)
UNIT_BIN   = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)
CTL_FUZZ   = config ca_index ca_pem ca_crl ocsp ocsp_http admin allowlist
CTL_REPLAY = $(CTL_FUZZ:%=$(BUILD)/fuzz/replay_%)

.PHONY: all deps run test unit integration asan fuzz format lint bench soak soak-rotations clean help
all: $(BUILD)/certgate

help:
	@echo "make            build $(BUILD)/certgate"
	@echo "make deps       install the Debian packages (apt-get; no-op when present)"
	@echo "make run        demo PKI, CA store, config, echo upstream; runs certgate in the foreground"
	@echo "make test       unit + integration tests, then the same under ASan+UBSan; last line 'N passed, N failed'"
	@echo "make asan       build into build/asan with ASan+UBSan"
	@echo "make bench      certgate vs nginx, HAProxy and Caddy on 127.0.0.1 (~5 min; BENCH_* knobs)"
	@echo "make soak       SOAK_SECONDS=1800 of mixed mTLS traffic while credentials, tenants and allowlist change"
	@echo "make soak-rotations  100 credential rotations per layout under mTLS load (issue 5's long run)"
	@echo "make fuzz       libFuzzer on every parser (clang; FUZZ_SECONDS=60 each, FUZZ_TARGETS=...)"
	@echo "make format     clang-format the sources"
	@echo "make lint       the layer check (scripts/check-layers.py), clang-tidy and cppcheck"
	@echo "make clean      remove build/"

deps:
	@scripts/install-deps.sh

$(BUILD)/certgate: $(BUILD)/proxy/main.o $(LIB_OBJ)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/proxy/%.o: proxy/%.c $(PROXY_HDR) $(wildcard ca-store/*.h)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/ca-store/%.o: ca-store/%.c $(wildcard ca-store/*.h)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# llhttp's generated C is compiled with its own, quiet flags.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) -std=c99 $(OPT) -g -w $(SAN) -I$(LLHTTP_INC) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-missing-prototypes -o $@ $^ $(LDLIBS) -lcmocka $(LDFLAGS)

unit: $(UNIT_BIN) $(BUILD)/fuzz/replay_xfcc $(BUILD)/fuzz/replay_proxy_proto \
      $(BUILD)/fuzz/replay_request $(BUILD)/fuzz/replay_response $(BUILD)/fuzz/replay_h2 \
      $(CTL_REPLAY)

# Fuzz targets: libFuzzer under clang (make fuzz); the same sources with tests/fuzz/replay.c as
# main() build a replay driver with gcc, which make test runs over the committed corpora.
FUZZ_LIBS = -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lcrypto
$(BUILD)/fuzz/replay_xfcc: tests/fuzz/fuzz_xfcc.c tests/fuzz/replay.c proxy/http/xfcc.c proxy/core/buf.c \
                           proxy/core/base.c
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(FUZZ_LIBS) $(LDFLAGS)
$(BUILD)/fuzz/replay_proxy_proto: tests/fuzz/fuzz_proxy_proto.c tests/fuzz/replay.c proxy/net/proxy_proto.c
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $^ $(LDFLAGS)

# The HTTP/1 codec's targets run the real exchange code on a connection without a peer
# (tests/fuzz/h1_harness.h), so they link the whole library.
$(BUILD)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/h1_harness.h $(LIB_OBJ)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) $(LDFLAGS)

# The HTTP/2 frame path's target runs the real client side on a connection without a peer
# (tests/fuzz/h2_harness.h), with a stub backend for the streams.
$(BUILD)/fuzz/replay_h2: tests/fuzz/fuzz_h2.c tests/fuzz/replay.c tests/fuzz/h2_harness.h \
                         tests/fuzz/fuzz_check.h $(LIB_OBJ)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -Itests/fuzz $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) $(LDFLAGS)

# The control-plane targets (configuration, CA store, OCSP, admin API, allowlist) link the whole
# library; tests/fuzz/replay.c is their main() without libFuzzer.
$(CTL_REPLAY): $(BUILD)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(LIB_OBJ) \
               $(wildcard tests/fuzz/*.h)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  LD      $@")
	$(Q)$(CC) $(CPPFLAGS) -Itests/fuzz $(CFLAGS) -o $@ $(filter %.c %.o,$^) $(LDLIBS) $(LDFLAGS)

# make fuzz runs every target (or FUZZ_TARGETS="config admin") for FUZZ_SECONDS each, one after
# the other, with its dictionary; new inputs go to build/fuzz/corpus-NAME, crashes to
# build/fuzz/crash-NAME-*. The library is built once with clang, instrumented, in build/fuzzlib.
FUZZ_TARGETS ?= xfcc proxy_proto request response h2 $(CTL_FUZZ)
FUZZ_SECONDS ?= 60
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_LIB_OBJ  = $(LIB_OBJ:$(BUILD)/%=build/fuzzlib/%)
FUZZ_MAXLEN_xfcc = 8192
FUZZ_MAXLEN_proxy_proto = 4200
fuzz:
	@$(MAKE) --no-print-directory BUILD=build/fuzzlib CC=clang OPT=-O1 \
	    SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzzlib
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus-$$t; \
	    echo "  FUZZ    $$t ($(FUZZ_SECONDS) s)"; \
	    clang -std=c11 -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer -DFUZZING $(CPPFLAGS) -Itests/fuzz \
	        tests/fuzz/fuzz_$$t.c $(FUZZ_LIB_OBJ) $(LDLIBS) -o build/fuzz/fuzz_$$t; \
	    case $$t in xfcc) m=$(FUZZ_MAXLEN_xfcc);; proxy_proto) m=$(FUZZ_MAXLEN_proxy_proto);; \
	        request|response) m=4096;; \
	        *) m=16384;; esac; \
	    d=; [ -f tests/fuzz/$$t.dict ] && d=-dict=tests/fuzz/$$t.dict; \
	    build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$m $$d \
	        -artifact_prefix=build/fuzz/crash-$$t- build/fuzz/corpus-$$t tests/fuzz/corpus/$$t; \
	done

.PHONY: fuzzlib
fuzzlib: $(LIB_OBJ)

test: deps
	@$(MAKE) --no-print-directory all unit WERROR=-Werror
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" WERROR=-Werror all unit
	@tests/run-all.sh

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer" all unit

run: deps all
	@scripts/demo.sh

bench: deps all
	@scripts/bench/run.sh

# Issue 14's soak: SOAK_SECONDS (default 1800) of mixed mTLS traffic while credentials rotate,
# tenants come and go and the allowlist changes (scripts/soak.py says what it reports).
soak: deps all
	@python3 scripts/soak.py --binary $(BUILD)/certgate --seconds $${SOAK_SECONDS:-1800}

# The longer reload soak of issue 5: 100 rotations per layout under load.
soak-rotations: deps all
	@CERTGATE_RELOAD_ROTATIONS=100 python3 tests/integration/run.py --binary $(BUILD)/certgate -k reload.load_

format:
	clang-format -i proxy/*.c proxy/*/*.[ch] ca-store/*.[ch] tests/unit/*.c

lint:
	python3 scripts/check-layers.py
	clang-tidy proxy/*.c proxy/*/*.c ca-store/*.c -- $(CPPFLAGS) -std=c11
	cppcheck --quiet --enable=warning,performance $(CPPFLAGS) proxy ca-store

clean:
	rm -rf build
