"""A small QMP client over a unix socket, and the node statistics of the
hostcache driver (query-blockstats' driver-specific part)."""

import json
import socket
import time

from hostcache.check import TestFailure, check
from hostcache.procs import stuck_report, wait_for_path


class QMPError(Exception):
    def __init__(self, cmd, err):
        super().__init__(f'{cmd}: {err.get("class")}: {err.get("desc")}')
        self.cmd = cmd
        self.cls = err.get('class')
        self.desc = err.get('desc', '')


class QMP:
    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile('rw', encoding='utf-8')
        self.events = []
        greeting = self._recv()
        check('QMP' in greeting, f'bad QMP greeting {greeting}')
        self.cmd('qmp_capabilities')

    def _recv(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError('QMP connection closed')
        return json.loads(line)

    def cmd(self, name, /, **args):
        """Run a command; returns its 'return' or raises QMPError."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.file.write(json.dumps(msg) + '\n')
        self.file.flush()
        while True:
            r = self._recv()
            if 'event' in r:
                self.events.append(r)
                continue
            if 'error' in r:
                raise QMPError(name, r['error'])
            if 'return' not in r:
                if 'QMP' in r:      # a stray greeting: not our reply
                    continue
                raise TestFailure(f'{name}: unexpected QMP message {r}')
            return r['return']

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def node_stats(qmp, node):
    """driver-specific stats of one node from query-blockstats."""
    for s in qmp.cmd('query-blockstats', **{'query-nodes': True}):
        if s.get('node-name') == node:
            return s.get('driver-specific')
    raise TestFailure(f'node {node} not in query-blockstats')


def connect_qmp(path, proc, log_path=None, timeout=30):
    """A QMP connection to the socket proc creates at path, once it
    listens; a process that does not answer is reported (stuck_report)."""
    wait_for_path(path, proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return QMP(path)
        except ConnectionRefusedError:
            # the socket file exists between bind() and listen()
            check(time.monotonic() < deadline and proc.poll() is None,
                  f'cannot connect to {path}')
            time.sleep(0.02)
        except (TimeoutError, socket.timeout):
            raise TestFailure(f'{path}: no QMP answer in 60 s\n'
                              + stuck_report(proc.pid, log_path)) from None
