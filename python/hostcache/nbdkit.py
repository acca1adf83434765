"""nbdkit servers on unix sockets, stopped by pid (procs.PROCS): plain
(Nbdkit), or behind the log filter (LoggedNbdkit), whose log shows a test
every request the server received."""

import os
import re
import shutil
import subprocess

from hostcache.lines import complete_lines
from hostcache.procs import PROCS, wait_for_path

NBDKIT = shutil.which('nbdkit') or '/usr/sbin/nbdkit'


class Nbdkit:
    """nbdkit in the foreground serving plugin (its name and arguments,
    e.g. ('memory', '16M') or ('file', f'file={img}')) on the unix socket
    WORKDIR/NAME.sock, once it listens."""

    def __init__(self, workdir, name, plugin, filters=(), args=(),
                 stderr=None, prefix=(), env=None):
        """filters: nbdkit filters (names), the first one nearest the
        client; args: their parameters; stderr: where nbdkit's messages go
        (default: ours); prefix: argv in front of nbdkit (taskset)."""
        self.name = name
        self.sock = os.path.join(workdir, f'{name}.sock')
        self.proc = PROCS.start([*prefix, NBDKIT, '-f', '-U', self.sock,
                                 *(f'--filter={f}' for f in filters),
                                 *plugin, *args],
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                env=env)
        wait_for_path(self.sock, self.proc)
        self.uri = f'nbd+unix:///?socket={self.sock}'
        # blockdev-add arguments of an NBD client node of it
        self.blockdev = {'driver': 'nbd',
                         'server': {'type': 'unix', 'path': self.sock}}

    def stop(self):
        PROCS.stop(self.proc)
        return self.proc.returncode


class LoggedNbdkit(Nbdkit):
    """nbdkit behind its log filter, which records every request it
    receives: an origin whose traffic a test can see (query-blockstats
    counts operations only for BlockBackends, so a child node's
    flush_operations stays 0)."""

    def __init__(self, workdir, name, plugin, filters=(), args=(),
                 stderr=None):
        """filters: more nbdkit filters under the log filter, so the log
        sees a request when it arrives."""
        self.log = os.path.join(workdir, f'{name}.log')
        super().__init__(workdir, name, plugin, ('log', *filters),
                         (f'logfile={self.log}', *args), stderr)

    def requests(self):
        """[(name, line)] of the requests logged so far, in order: lines
        "<date> <time> connection=N Name id=M ..." (not the replies,
        "connection=N ...Name id=M ...").  Complete lines only: nbdkit
        may be writing the last one."""
        out = []
        for ln in complete_lines(self.log):
            m = re.search(r'connection=\d+ (\w+) id=', ln)
            if m and '...' not in ln.split('id=')[0]:
                out.append((m.group(1), ln.strip()))
        return out

    def data_requests(self):
        """Names of the data requests (reads, writes, block status...)
        logged so far, in order."""
        return [n for n, _ in self.requests()
                if n in ('Read', 'Extents', 'Write', 'Zero', 'Trim', 'Cache')]
