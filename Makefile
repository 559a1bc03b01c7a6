# Bulwark build. One Makefile, no generated build system.
#   make            release build: build/bulwark
#   make SAN=1      ASan+UBSan build: build-san/bulwark
#   make unit       build and run the C unit tests
#   make check      everything the README's test command runs (unit + e2e, normal and sanitized)
#   make fuzz       libFuzzer targets (clang), each run for FUZZ_SECONDS (make check: 15 s each)

CC      ?= cc
SAN     ?= 0
ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
MALLOC_LIBS :=
else
BUILD   := build
SANFLAGS :=
OPT     := -O2 -g
# The broker binary uses jemalloc: an OpenSSL 3.0 mTLS handshake makes ~2,400 allocations,
# and glibc's malloc spent ~10% of the broker's CPU on them; jemalloc also gives memory back
# after a connection storm. (Not with the sanitizers, which bring their own allocator.)
MALLOC_LIBS := -ljemalloc
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-format-truncation -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -pthread -Isrc $(DEPCFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS) -pthread
DEPS    := libmariadb libpq hiredis jansson libcrypt
DEPCFLAGS := $(shell pkg-config --cflags $(DEPS) 2>/dev/null)
LDLIBS  := -lcurl -lssl -lcrypto -lsqlite3 $(shell pkg-config --libs $(DEPS) 2>/dev/null)

SRCS    := $(shell find src -name '*.c' | sort)
OBJS    := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIBOBJS := $(filter-out $(BUILD)/obj/src/main.o,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all unit e2e check check-one run clean fuzz fuzz-short
all: $(BUILD)/bulwark

$(BUILD)/bulwark: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MALLOC_LIBS)

$(BUILD)/libbulwark.a: $(LIBOBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# Unit tests may #include the .c under test; they link against the rest of the broker.
$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(BUILD)/libbulwark.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libbulwark.a $(LDFLAGS) $(LDLIBS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: $(BUILD)/bulwark
	BULWARK_BIN=$(CURDIR)/$(BUILD)/bulwark /usr/bin/python3 -m pytest -q -n $${E2E_JOBS:-4} tests/e2e

# One full pass (unit + e2e) for the current SAN setting.
check-one: unit e2e

check:
	$(MAKE) bench
	$(MAKE) check-one
	$(MAKE) SAN=1 check-one
	$(MAKE) fuzz-short

run: $(BUILD)/bulwark
	$(BUILD)/bulwark

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,build-fuzz/fuzz_%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LIBSRCS := $(filter-out src/main.c,$(SRCS))
FUZZ_OBJS := $(FUZZ_LIBSRCS:%.c=build-fuzz/obj/%.o)
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -Isrc $(DEPCFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP
# The broker's code is compiled once (instrumented), then each target links against it.
build-fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c -o $@ $<
build-fuzz/libbulwark.a: $(FUZZ_OBJS)
	rm -f $@ && ar rcs $@ $^
build-fuzz/fuzz_%: fuzz/fuzz_%.c build-fuzz/libbulwark.a
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libbulwark.a -pthread $(LDLIBS)
# Each target for FUZZ_SECONDS from its seed corpus (new finds go to build-fuzz/corpus-NAME).
# A crash, leak or timeout fails the run and leaves the input in build-fuzz/.
fuzz: $(FUZZ_TARGETS)
	@set -e; for t in $(FUZZ_TARGETS); do n=$${t#build-fuzz/fuzz_}; mkdir -p build-fuzz/corpus-$$n; \
	  echo "== $$t ($(FUZZ_SECONDS)s)"; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/$$n- build-fuzz/corpus-$$n fuzz/corpus/$$n > build-fuzz/$$n.log 2>&1 \
	    || { tail -40 build-fuzz/$$n.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^Done' build-fuzz/$$n.log | tr '\n' ' '; echo; done

# The short fuzz pass of `make check`.
fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=$${FUZZ_SECONDS_SHORT:-15}

clean:
	rm -rf build build-san build-fuzz

# ---- bench: the load generator build/bwbench (bench/*.c; usage in docs/BENCH_TOOL.md) ----
# A separate program: C11, OpenSSL only, always built optimised into build/ whatever SAN says.
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_HDRS := $(wildcard bench/*.h)
.PHONY: bench
bench: build/bwbench
build/bwbench: $(BENCH_SRCS) $(BENCH_HDRS)
	@mkdir -p build
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g $(WARN) -pthread -o $@ $(BENCH_SRCS) -lssl -lcrypto
# ---- end bench ----

-include $(OBJS:.o=.d) $(wildcard build-fuzz/obj/src/*/*.d)
