#!/usr/bin/env python3
"""Shipped to and run on the node (standard library only).

Talkforge live relay: connects to a live render session's Unix socket (``live_session.py``) and pipes
stdin → socket and socket → stdout, byte for byte, so the platform reaches the session through the node's
ordinary process channel (a subprocess on a local node, an exec channel of the pooled SSH transport on an
SSH node). It ends when either side closes. ``--wait S``: keep trying to connect for S seconds (the
session may still be loading, or serving another conversation's turn).
"""

import argparse
import os
import select
import socket
import sys
import time


def main():
    parser = argparse.ArgumentParser(description="Talkforge live relay (runs on the node)")
    parser.add_argument("socket")
    parser.add_argument("--wait", type=float, default=0.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(args.socket)
            break
        except OSError as error:
            sock.close()
            if time.monotonic() >= deadline:
                print(f"[ERROR] no live session at {args.socket}: {error}", file=sys.stderr, flush=True)
                return 3
            time.sleep(0.05)
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    inputs = [stdin, sock]
    while True:
        ready, _, _ = select.select(inputs, [], [])
        if sock in ready:
            data = sock.recv(1 << 16)
            if not data:
                return 0
            view = memoryview(data)
            while view:
                view = view[os.write(stdout, view) :]
        if stdin in ready:
            data = os.read(stdin, 1 << 16)
            if not data:
                sock.shutdown(socket.SHUT_WR)  # the platform hung up: the session sees the end
                inputs = [sock]
                continue
            sock.sendall(data)


if __name__ == "__main__":
    sys.exit(main())
