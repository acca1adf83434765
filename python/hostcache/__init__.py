"""The project's Python helpers: one package for the tests (tests/), the
demo (scripts/demo-manager.py) and the benchmarks (scripts/bench.py,
scripts/bench_migration.py).  Standard library only.

meson's test environment and the Makefile put python/ on PYTHONPATH; a
script run by hand needs `PYTHONPATH=python` (from the source tree).

    paths     where the source tree, the builds and their binaries are
    check     TestFailure, check(), check_eq(), poll(), promtool
    procs     every process started is stopped by pid (PROCS), run(),
              pid helpers for daemons that outlive their starter
    qmp       a QMP client, node statistics
    qemu      qemu-storage-daemon, hostcache behind an NBD export,
              qemu-io, firmware arguments, images
    nbdkit    nbdkit servers (plain, or behind its log filter)
    nbd       a minimal NBD client (simple replies, pipelining)
    fio       fio runs and their JSON reports
    runner    main(): runs a test script's test_* functions
    lines     complete lines of a file another process is still writing
    ssdfile   the SSD tier file, read independently of the C code
    guest     the tiny Linux test guest under TCG
    libvirt   a private libvirtd, domain XML, the placement recipes
    manager   hostcached for the tests, a client of its REST API
    migrate   live migration between two host slots with plain QEMU
    ssdtier   the SSD tier tests' set-up (tests/driver/test_ssd_*.py)
    writeback the write-back tests' set-up (tests/driver/test_wb_*.py)
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
