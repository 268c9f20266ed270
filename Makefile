# apiary - build, test, fuzz, install.
#
#   make            build build/apiaryd (and build/apiarystat once it exists)
#   make run        deps + build + private PostgreSQL + apiaryd on :8080
#   make test       deps + build + unit tests + fuzz corpus replay + integration
#   make sanitize   the same tests against an ASan+UBSan build (build-san/)
#   make fuzz       libFuzzer targets, each run for FUZZ_SECONDS
#   make nometrics  build-nometrics/apiaryd: request recording compiled out
#   make lint       clang-format check, cppcheck, clang-tidy
#   make install    PREFIX=/usr/local DESTDIR=
#
# Objects go to $(BUILD); a change of flags forces a full rebuild through
# $(BUILD)/.flags (the idea of redis's .make-settings).

CC      ?= gcc
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
FUZZ_SECONDS ?= 60
PYTEST  ?= /usr/bin/python3 -m pytest

PG_INCLUDE := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wcast-qual -Wpointer-arith \
        -Wwrite-strings -Wvla -Werror
OPT     ?= -O2 -g -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fno-omit-frame-pointer
SAN     ?=
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) \
              -Iserver -Iworker -Ishm -isystem $(PG_INCLUDE) -MMD -MP $(EXTRA_CFLAGS)
LDFLAGS_ALL := $(SAN) -rdynamic $(EXTRA_LDFLAGS)
LIBS    := -lpq -lbsd -ljansson -lz -lcrypto -lm

LIB_SRC := $(filter-out server/main.c shm/apiarystat.c,\
             $(wildcard server/*.c worker/*.c shm/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)
STAT_BIN := $(if $(wildcard shm/apiarystat.c),$(BUILD)/apiarystat)

.PHONY: all run test unit replay integration sanitize fuzz lint format \
        install clean deps nometrics
all: $(BUILD)/apiaryd $(STAT_BIN) $(BUILD)/floor $(BUILD)/loadgen $(BUILD)/cache-torture

$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' | cmp -s - $@ || \
	    echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' > $@
FORCE:

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

# the OpenAPI document is embedded with .incbin (worker/openapi.c)
$(BUILD)/worker/openapi.o: worker/openapi.json

$(BUILD)/libapiary.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/apiaryd: $(BUILD)/server/main.o $(BUILD)/libapiary.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

$(BUILD)/apiarystat: $(BUILD)/shm/apiarystat.o $(BUILD)/libapiary.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# The floor of bench-health: a fixed-response epoll server.
$(BUILD)/floor: $(BUILD)/scripts/floor.o
	$(CC) $(LDFLAGS_ALL) -o $@ $^

# The constant-rate load generator of scripts/loadtest, on the server's
# latency histogram (shm/histogram.c, self-contained).
$(BUILD)/loadgen: $(BUILD)/scripts/loadgen.o $(BUILD)/shm/histogram.o
	$(CC) $(LDFLAGS_ALL) -o $@ $^ -lm

# The shared cache's multi-process stress, SIGKILL and speed runs.
$(BUILD)/cache-torture: tests/cache_torture.c $(BUILD)/libapiary.a $(BUILD)/.flags
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/libapiary.a -lpthread

$(BUILD)/tests/test_%: tests/unit/test_%.c $(BUILD)/libapiary.a $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes \
	    -DAPIARY_SQL_DIR='"$(abspath sql)"' $(LDFLAGS_ALL) -o $@ $< \
	    $(BUILD)/libapiary.a -lcmocka $(LIBS)

$(BUILD)/tests/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(BUILD)/libapiary.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes $(LDFLAGS_ALL) -o $@ \
	    tests/fuzz/replay.c $< $(BUILD)/libapiary.a $(LIBS)

# apiaryd with request recording compiled out (scripts/bench-metrics).
nometrics:
	@$(MAKE) --no-print-directory BUILD=build-nometrics \
	    EXTRA_CFLAGS=-DAPIARY_NO_METRICS build-nometrics/apiaryd

deps:
	@scripts/deps.sh build test

unit: $(UNIT_BIN) $(BUILD)/cache-torture
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done
	$(BUILD)/cache-torture stress 4 1
	$(BUILD)/cache-torture kill 100

# Every committed corpus file and past crash, replayed under the gcc build.
replay: $(REPLAY_BIN)
	@set -e; for n in $(FUZZ_NAMES); do \
	    $(BUILD)/tests/replay_$$n tests/fuzz/corpus/$$n tests/fuzz/regression/$$n; \
	done

integration: $(BUILD)/apiaryd
	APIARY_BIN=$(abspath $(BUILD)/apiaryd) $(PYTEST) -q tests/integration

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit replay integration

sanitize: deps
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	$(MAKE) --no-print-directory BUILD=build-san \
	    SAN='-fsanitize=address,undefined -fno-sanitize-recover=all' \
	    OPT='-O1 -g -fno-omit-frame-pointer' all unit replay integration

FUZZ_CC := clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Iserver -Iworker -Ishm \
              -isystem $(PG_INCLUDE) -fsanitize=fuzzer,address,undefined
fuzz:
	@scripts/deps.sh fuzz
	@mkdir -p build-fuzz
	@set -e; for n in $(FUZZ_NAMES); do \
	    $(FUZZ_CC) $(FUZZ_FLAGS) -o build-fuzz/fuzz_$$n tests/fuzz/fuzz_$$n.c \
	        $(LIB_SRC) $(LIBS); \
	    mkdir -p build-fuzz/corpus_$$n; \
	    echo "== fuzz_$$n for $(FUZZ_SECONDS)s"; \
	    build-fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=tests/fuzz/ build-fuzz/corpus_$$n \
	        tests/fuzz/corpus/$$n; \
	done

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/pg.sh start
	@$(BUILD)/apiaryd -o database_url="$$(scripts/pg.sh url)" migrate
	@scripts/pg.sh psql -q -f scripts/seed.sql
	@# a development HS256 key, made once (writes need a token: issue 10)
	@test -s var/dev-jwt-secret || (umask 077 && mkdir -p var && \
	    head -c 32 /dev/urandom | base64 | tr -d '=\n' > var/dev-jwt-secret)
	@echo 'apiaryd: writes need a token; from another terminal:'
	@echo '  TOKEN=$$(scripts/mint-token)   # signed with var/dev-jwt-secret, 1 h'
	@echo '  curl -H "Authorization: Bearer $$TOKEN" -H "Content-Type: application/json" \'
	@echo '       -d '"'"'{"name":"Ada","email":"ada@example.org"}'"'"' localhost:8080/users'
	$(BUILD)/apiaryd -o database_url="$$(scripts/pg.sh url)" -o listen=8080 \
	    -o auth_secret_file=var/dev-jwt-secret -o status_page=on

CLANG_FORMAT ?= clang-format
C_FILES = $(wildcard server/*.[ch] worker/*.[ch] shm/*.[ch] tests/unit/*.c tests/fuzz/*.c scripts/*.c)
format:
	$(CLANG_FORMAT) -i $(C_FILES)

lint:
	@scripts/deps.sh lint
	$(CLANG_FORMAT) --dry-run --Werror $(C_FILES)
	cppcheck -q --enable=warning,portability,performance --error-exitcode=1 \
	    -D_GNU_SOURCE --suppress=missingIncludeSystem -Iserver -Iworker -Ishm \
	    server worker shm
	# not checked: Annex K advice, and two clang-tidy 14 false positives
	# (va_list "uninitialized" after va_start, memcpy of non-strings)
	clang-tidy -quiet --warnings-as-errors='*' \
	    --checks='-*,clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-valist.Uninitialized,-bugprone-not-null-terminated-result' \
	    $(LIB_SRC) server/main.c -- -std=c11 -D_GNU_SOURCE -Iserver -Iworker -Ishm \
	    -isystem $(PG_INCLUDE)

# make install PREFIX=... DESTDIR=...: binaries, sql/, an example config with
# every key documented (generated by apiaryd -e from config.c's table, so it
# cannot go stale), a starting config when none is installed, the LSB init
# script, the systemd unit, the logrotate file and the man pages.  Paths in
# the scripts are substituted for PREFIX, SYSCONFDIR, RUNDIR and LOGDIR.
SYSCONFDIR ?= $(PREFIX)/etc
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
RUNDIR     ?= /run/apiary
LOGDIR     ?= /var/log/apiary
SUBST = sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' \
            -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
            -e 's|@LOGDIR@|$(LOGDIR)|g' -e 's|@RUNDIR@|$(RUNDIR)|g'

$(BUILD)/apiary.conf.example: $(BUILD)/apiaryd
	$(BUILD)/apiaryd -e > $@

# remade every time: it holds the install paths
$(BUILD)/apiary.conf: $(BUILD)/apiary.conf.example FORCE
	{ echo '# apiaryd configuration, as installed; every key is listed,'; \
	  echo '# commented out with its default, further down.'; \
	  echo 'pidfile = $(RUNDIR)/apiaryd.pid'; \
	  echo 'error_log = $(LOGDIR)/error.log'; \
	  echo 'access_log = $(LOGDIR)/access.log'; \
	  echo 'sql_dir = $(DATADIR)/apiary/sql'; \
	  echo '# started as root (init script), the master drops to this user:'; \
	  echo '#user = apiary'; \
	  echo '#database_url = postgresql://apiary@localhost/apiary'; \
	  echo; cat $<; } > $@

install: all $(BUILD)/apiary.conf.example $(BUILD)/apiary.conf
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(DATADIR)/apiary/sql \
	    $(DESTDIR)$(SYSCONFDIR)/apiary $(DESTDIR)$(SYSCONFDIR)/init.d \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(BUILD)/apiaryd $(DESTDIR)$(PREFIX)/sbin/apiaryd
	$(if $(STAT_BIN),install -d $(DESTDIR)$(PREFIX)/bin && \
	    install -m 0755 $(STAT_BIN) $(DESTDIR)$(PREFIX)/bin/apiarystat)
	install -m 0644 sql/*.sql $(DESTDIR)$(DATADIR)/apiary/sql/
	install -m 0644 $(BUILD)/apiary.conf.example $(DESTDIR)$(SYSCONFDIR)/apiary/
	test -e $(DESTDIR)$(SYSCONFDIR)/apiary/apiary.conf || \
	    install -m 0644 $(BUILD)/apiary.conf $(DESTDIR)$(SYSCONFDIR)/apiary/apiary.conf
	$(SUBST) scripts/apiary.init > $(DESTDIR)$(SYSCONFDIR)/init.d/apiary
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/apiary
	$(SUBST) scripts/apiary.service > $(DESTDIR)$(UNITDIR)/apiary.service
	$(SUBST) scripts/apiary.logrotate > $(DESTDIR)$(SYSCONFDIR)/logrotate.d/apiary
	chmod 0644 $(DESTDIR)$(UNITDIR)/apiary.service $(DESTDIR)$(SYSCONFDIR)/logrotate.d/apiary
	install -m 0644 server/apiaryd.8 $(DESTDIR)$(MANDIR)/man8/apiaryd.8
	install -m 0644 shm/apiarystat.1 $(DESTDIR)$(MANDIR)/man1/apiarystat.1

clean:
	rm -rf build build-san build-fuzz build-nometrics

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
