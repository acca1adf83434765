# hostcache: the conventional front end over the project's meson build and
# the in-tree QEMU build (as QEMU's own Makefile fronts its meson build).
#
#   make          set up the host (idempotent), build QEMU with the driver and
#                 the project (engine tests, tools, the browser dashboard)
#   make check    everything above, then every test (tests/meson.build) and
#                 each fuzz target for a few seconds (tests/fuzz, build/fuzz)
#   make fuzz     the fuzz targets, FUZZ_SECONDS each
#   make bench    the benchmarks, each figure next to its floor
#   make demo     the main job end to end on this machine: libvirtd,
#                 hostcached, a VM on a simulated slow SAN, a policy assigned
#                 through the REST API, the guest's workload with and without
#                 the cache; leaves the daemon and the VM running
#   make demo-stop  stop what make demo left running
#   make demo-san   the driver alone: fio against the simulated SAN with and
#                 without hostcache (qemu-storage-daemon)
#   make install  hostcached, hostcachectl, the project's QEMU (under
#                 PREFIX/libexec/hostcache, never over Debian's), the
#                 dashboard, the docs, the systemd unit and the configuration
#                 example, into $(DESTDIR)$(PREFIX) (default /usr/local)
#   make uninstall  remove what make install installed
#   make deb      Debian packages hostcache and hostcache-qemu of the same
#                 (PREFIX /usr) in $(BUILD)/deb
#
# A second `make` with nothing changed takes seconds: every step is stamped
# or left to ninja.

BUILD      ?= build
MESON_DIR  := $(BUILD)/meson
QEMU_DIR   := $(BUILD)/qemu-build
FUZZ_DIR   := $(BUILD)/fuzz
STAMPS     := $(BUILD)/stamps
MESON      ?= meson
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
# The scripts (demo, bench, soak) import the project's Python helpers,
# python/hostcache; meson's test environment sets the same path for tests.
PY         := PYTHONPATH=$(abspath python) /usr/bin/python3
INSTALL_ENV = BUILD=$(abspath $(BUILD)) DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" \
              SYSCONFDIR="$(SYSCONFDIR)" $(if $(UNITDIR),UNITDIR="$(UNITDIR)")

.PHONY: all deps qemu project check check-engine check-driver bench demo \
        demo-stop demo-san soak fuzz fuzz-build clean distclean install uninstall deb

all: qemu project

deps:
	@STAMP_DIR=$(STAMPS) bash scripts/setup-deps.sh

qemu: deps
	@BUILD=$(abspath $(BUILD)) bash scripts/build-qemu.sh

$(MESON_DIR)/build.ninja: | deps
	$(MESON) setup $(MESON_DIR) -Dqemu_build=$(abspath $(QEMU_DIR)) \
	  -Dweb_dir=$(abspath $(BUILD))/web

# The dashboard (web/): npm ci when its lock file changed, then esbuild into
# $(BUILD)/web, hostcached's default --web-dir.
project: deps $(MESON_DIR)/build.ninja
	@ninja -C $(MESON_DIR)
	@BUILD=$(abspath $(BUILD)) bash scripts/build-web.sh

check: all fuzz-build
	$(MESON) test -C $(MESON_DIR) --print-errorlogs $(TESTS)
	$(MESON) test -C $(FUZZ_DIR) --no-rebuild --print-errorlogs --suite fuzz

# The fuzz targets (tests/fuzz): a build of their own with clang, libFuzzer
# and AddressSanitizer.  make check runs each for seconds (its meson test),
# make fuzz for FUZZ_SECONDS each, from the committed corpora.
FUZZ_SECONDS ?= 600

$(FUZZ_DIR)/build.ninja: | deps
	CC=clang CXX=clang++ $(MESON) setup $(FUZZ_DIR) -Dfuzz=true \
	  -Dqemu_build=$(abspath $(QEMU_DIR))

fuzz-build: deps $(FUZZ_DIR)/build.ninja
	@ninja -C $(FUZZ_DIR) fuzz

fuzz: fuzz-build
	for t in $$(cd tests/fuzz && ls -d */corpus | cut -d/ -f1); do \
	  HOSTCACHE_FUZZ_BUILD=$(abspath $(FUZZ_DIR))/tests/fuzz \
	    bash tests/fuzz/run.sh $$t $(FUZZ_SECONDS) || exit 1; \
	done

check-engine: all
	$(MESON) test -C $(MESON_DIR) --print-errorlogs --suite engine

check-driver: all
	$(MESON) test -C $(MESON_DIR) --print-errorlogs --suite driver

bench: all
	$(PY) scripts/bench.py

demo: all
	$(PY) scripts/demo-manager.py start

demo-stop:
	$(PY) scripts/demo-manager.py stop

demo-san: all
	bash scripts/demo.sh

install: all
	@$(INSTALL_ENV) bash scripts/install.sh install

uninstall:
	@$(INSTALL_ENV) bash scripts/install.sh uninstall

deb: all
	@BUILD=$(abspath $(BUILD)) bash scripts/make-deb.sh

clean:
	rm -rf $(MESON_DIR) $(FUZZ_DIR)
	-ninja -C $(QEMU_DIR) clean

distclean:
	rm -rf $(BUILD) web/node_modules

# make soak: the long runs of the crash-safety tests.  SOAK_CYCLES SIGKILL
# cycles of the write-back crash oracle, then the write-back tests (the
# oracle's 10 cycles, destaging, ordering) with HC_SOAK=10 (ten times the
# rounds, durations and sizes), under SOAK_SEEDS different seeds, then 200
# live migrations per caching mode (the migration ping-pong with
# HC_SOAK=10).  Each run prints its seed (HC_SEED repeats it).
SOAK_CYCLES ?= 200
SOAK_SEEDS  ?= 3

soak: all
	HC_CRASH_CYCLES=$(SOAK_CYCLES) HC_CRASH_SECONDS=4 \
	  $(PY) tests/driver/test_wb_crash.py crash
	for i in $$(seq $(SOAK_SEEDS)); do \
	  for t in crash destage order; do \
	    HC_CRASH_CYCLES=10 HC_SOAK=10 \
	      $(PY) tests/driver/test_wb_$$t.py || exit 1; \
	  done; \
	done
	for i in $$(seq $(SOAK_SEEDS)); do \
	  HC_SOAK=10 $(PY) tests/driver/test_powercut.py || exit 1; \
	done
	HC_SOAK=10 $(PY) tests/driver/test_migration.py ping_pong
