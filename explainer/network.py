"""This machine's address on its local network: what students' phones in the same room reach."""
from __future__ import annotations

import socket


def lan_address() -> str | None:
    """This machine's address on its network (what a phone in the same room would reach), if any.
    Connecting a UDP socket sends nothing; it only asks the kernel which interface it would use."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr
