"""Two pty pairs joined back to back: ``python -m tests.ptyrelay LINK_A LINK_B``.

What one program writes to LINK_A the other reads from LINK_B and back, like
a null-modem cable; used to put an independent MODBUS peer on the gateway's line.
"""

import os
import select
import signal
import sys
import tty


def open_end(link: str) -> int:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.ttyname(slave), link)
    open_end.keep.append(slave)   # keep the slave ends open so the masters never see EOF
    return master


open_end.keep = []


def main() -> int:
    link_a, link_b = sys.argv[1:3]
    a, b = open_end(link_a), open_end(link_b)
    peer = {a: b, b: a}
    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    while running[0]:
        ready, _, _ = select.select([a, b], [], [], 0.2)
        for fd in ready:
            try:
                os.write(peer[fd], os.read(fd, 4096))
            except OSError:
                pass
    for link in (link_a, link_b):
        os.unlink(link)
    return 0


if __name__ == "__main__":
    sys.exit(main())
