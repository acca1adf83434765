"""Complete lines of a file another process is still writing (standard
library only; imported by the tests and by scripts/demo-manager.py).

A guest's serial console (QEMU writes it byte by byte as the UART sends),
a daemon's log, `virsh event` output: whoever reads such a file while it
grows sees a last line that is still being written.  Parsed, that line is a
record with fields missing ('errors=' not there yet), a number cut short,
or a pattern matched too early.  These functions return only what ends with
a newline; the unfinished rest is left for the next read.

    text, end = read_complete(path)        # text up to its last newline
    more, end = read_complete(path, end)   # what was completed since
    for line in complete_lines(path): ...  # without their line ends

Text is decoded as open(path) would in text mode: undecodable bytes
replaced, '\\r\\n' and a lone '\\r' read as '\\n' (a serial console ends
its lines with '\\r\\n').  Offsets are bytes.
"""


def read_complete(path, start=0):
    """(text, end): the bytes of path from offset start up to and including
    its last newline, decoded, and the offset just after that newline,
    where the next read starts.  A file that does not exist (yet) or has no
    newline after start reads as ('', start)."""
    try:
        with open(path, 'rb') as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return '', start
    cut = data.rfind(b'\n') + 1
    text = data[:cut].decode(errors='replace')
    return text.replace('\r\n', '\n').replace('\r', '\n'), start + cut


def complete_text(path, start=0):
    """The text of path from byte offset start that ends with its last
    newline ('' when there is none yet)."""
    return read_complete(path, start)[0]


def complete_lines(path, start=0):
    """The complete lines of path from byte offset start, without their
    line ends."""
    return complete_text(path, start).split('\n')[:-1]
