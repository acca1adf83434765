"""fio runs (stopped by pid, procs.PROCS) and their JSON reports."""

import json
import os
import shutil
import subprocess

from hostcache.check import check
from hostcache.procs import PROCS

FIO = shutil.which('fio') or '/usr/bin/fio'


def read_report(path):
    """The JSON report fio wrote to path (fio's nbd engine prints
    messages, which may land in front of the document)."""
    with open(path) as f:
        text = f.read()
    return json.loads(text[text.index('{'):])


class Fio:
    """A fio run in the background, its report in WORKDIR/NAME.json, its
    output in WORKDIR/NAME.out.  With uri: one job NAME with the nbd
    ioengine (libnbd) against uri and args its options; without: args
    are the jobs, each from its --name= on.  prefix: argv in front of
    fio (taskset)."""

    def __init__(self, workdir, name, uri, args, prefix=()):
        self.name = name
        self.json_path = os.path.join(workdir, f'{name}.json')
        self.out_path = os.path.join(workdir, f'{name}.out')
        self.out = open(self.out_path, 'w')
        job = ([f'--name={name}', '--ioengine=nbd', f'--uri={uri}']
               if uri else [])
        argv = [*prefix, FIO, '--output-format=json',
                f'--output={self.json_path}', '--verify_state_save=0', *job,
                *args]
        self.report = None
        self.proc = PROCS.start(argv, stdout=self.out,
                                stderr=subprocess.STDOUT)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=300):
        """Wait for fio; returns the report of its first job (all of them
        in self.report), raises when fio failed."""
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            PROCS.stop(self.proc)
            self.out.close()
        with open(self.out_path) as f:
            out = f.read()
        try:
            self.report = read_report(self.json_path)
            job = self.report['jobs'][0]
        except (OSError, ValueError, KeyError, IndexError):
            job = None
        err = job['error'] if job else None
        check(rc == 0 and job is not None and err == 0 and 'verify' not in out,
              f'fio {self.name} exited {rc}, error {err}:\n{out[-3000:]}')
        return job
