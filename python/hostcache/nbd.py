"""A minimal NBD client over a unix socket (standard library only).

Tests use it where they must know exactly which request the server has
acknowledged: fixed newstyle handshake (NBD_OPT_GO, falling back to
NBD_OPT_EXPORT_NAME), simple replies only (structured replies are never
negotiated, so a read is always answered with the data read, never from
block status), and pipelining: submit several requests, then collect the
replies in whatever order the server sends them.

    c = NBDClient(sock_path, 'hc0')
    c.write(0, b'x' * 4096, fua=True)
    h1 = c.submit_write(4096, data)       # pipelined
    h2 = c.submit_flush()
    for handle, err, data in c.replies(2): ...
    c.close()

Blocking calls raise NBDError(errno) when the server answers with an error;
the pipelined calls return the error number and leave judging it to the
caller.
"""

import errno as _errno
import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC_OPT = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
INFO_EXPORT = 0

# transmission flags
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1


class NBDError(Exception):
    """The server answered a request with an error."""

    def __init__(self, what, err):
        super().__init__(f'{what}: {_errno.errorcode.get(err, err)} '
                         f'({err})')
        self.errno = err


class NBDProtocolError(Exception):
    pass


class NBDClient:
    def __init__(self, path, export, timeout=60, use_go=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.next_handle = 1
        self.pending = {}           # handle -> (cmd, offset, length)
        self.size = None
        self.tflags = 0
        try:
            self._handshake(export, use_go)
        except BaseException:
            self.sock.close()
            raise

    # ---- socket helpers -----------------------------------------------------

    def _recv(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ConnectionError('NBD server closed the connection')
            got += k
        return bytes(buf)

    def _send(self, *parts):
        self.sock.sendall(b''.join(parts))

    # ---- handshake ----------------------------------------------------------

    def _handshake(self, export, use_go):
        magic, opt_magic, hflags = struct.unpack('>QQH', self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT:
            raise NBDProtocolError('not a newstyle NBD server')
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise NBDProtocolError('server is not fixed newstyle')
        cflags = FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES)
        self._send(struct.pack('>I', cflags))
        name = export.encode()
        if use_go and self._opt_go(name):
            return
        # NBD_OPT_EXPORT_NAME: no reply on error, the server just hangs up
        self._send(struct.pack('>QII', IHAVEOPT, OPT_EXPORT_NAME, len(name)),
                   name)
        self.size, self.tflags = struct.unpack('>QH', self._recv(10))
        if not cflags & FLAG_NO_ZEROES:
            self._recv(124)

    def _opt_go(self, name):
        """NBD_OPT_GO; False when the server does not know the option."""
        data = struct.pack('>I', len(name)) + name + struct.pack('>H', 0)
        self._send(struct.pack('>QII', IHAVEOPT, OPT_GO, len(data)), data)
        while True:
            magic, opt, rtype, length = struct.unpack('>QIII', self._recv(20))
            if magic != REPLY_MAGIC_OPT or opt != OPT_GO:
                raise NBDProtocolError(f'bad option reply {magic:#x} {opt}')
            payload = self._recv(length)
            if rtype == REP_ERR_UNSUP:
                return False
            if rtype & REP_FLAG_ERROR:
                raise NBDProtocolError(
                    f'NBD_OPT_GO refused ({rtype & ~REP_FLAG_ERROR}): '
                    f'{payload.decode(errors="replace")}')
            if rtype == REP_INFO and len(payload) >= 12:
                itype, = struct.unpack('>H', payload[:2])
                if itype == INFO_EXPORT:
                    self.size, self.tflags = struct.unpack('>QH',
                                                           payload[2:12])
            elif rtype == REP_ACK:
                if self.size is None:
                    raise NBDProtocolError('NBD_OPT_GO without export info')
                return True

    # ---- transmission: pipelined --------------------------------------------

    def _submit(self, cmd, offset, length, flags=0, data=b''):
        handle = self.next_handle
        self.next_handle += 1
        self.pending[handle] = (cmd, offset, length)
        self._send(struct.pack('>IHHQQI', REQUEST_MAGIC, flags, cmd, handle,
                               offset, length), data)
        return handle

    def submit_read(self, offset, length):
        return self._submit(CMD_READ, offset, length)

    def submit_write(self, offset, data, fua=False):
        return self._submit(CMD_WRITE, offset, len(data),
                            CMD_FLAG_FUA if fua else 0, data)

    def submit_flush(self):
        return self._submit(CMD_FLUSH, 0, 0)

    def submit_trim(self, offset, length, fua=False):
        return self._submit(CMD_TRIM, offset, length,
                            CMD_FLAG_FUA if fua else 0)

    def submit_write_zeroes(self, offset, length, fua=False, no_hole=False):
        flags = (CMD_FLAG_FUA if fua else 0) | \
            (CMD_FLAG_NO_HOLE if no_hole else 0)
        return self._submit(CMD_WRITE_ZEROES, offset, length, flags)

    def reply(self):
        """The next reply: (handle, errno, data) (data only for reads)."""
        magic, err, handle = struct.unpack('>IIQ', self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC:
            raise NBDProtocolError(f'bad reply magic {magic:#x}')
        if handle not in self.pending:
            raise NBDProtocolError(f'reply to unknown handle {handle}')
        cmd, _, length = self.pending.pop(handle)
        data = None
        if cmd == CMD_READ and err == 0:
            data = self._recv(length)
        return handle, err, data

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def wait(self, handle):
        """Collect replies until handle's arrives; returns (errno, data).
        Replies to other handles are dropped: use reply() to see them."""
        while True:
            h, err, data = self.reply()
            if h == handle:
                return err, data

    def in_flight(self):
        return len(self.pending)

    # ---- transmission: blocking ---------------------------------------------

    def _do(self, handle, what):
        err, data = self.wait(handle)
        if err:
            raise NBDError(what, err)
        return data

    def read(self, offset, length):
        return self._do(self.submit_read(offset, length),
                        f'read {offset}+{length}')

    def write(self, offset, data, fua=False):
        self._do(self.submit_write(offset, data, fua),
                 f'write {offset}+{len(data)}')

    def flush(self):
        self._do(self.submit_flush(), 'flush')

    def trim(self, offset, length):
        self._do(self.submit_trim(offset, length), f'trim {offset}+{length}')

    def write_zeroes(self, offset, length, no_hole=False):
        self._do(self.submit_write_zeroes(offset, length, no_hole=no_hole),
                 f'write-zeroes {offset}+{length}')

    def close(self):
        """Soft disconnect (NBD_CMD_DISC) after the pending replies."""
        try:
            while self.pending:
                self.reply()
            self._send(struct.pack('>IHHQQI', REQUEST_MAGIC, 0, CMD_DISC,
                                   0, 0, 0))
        except OSError:
            pass
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.sock.close()
