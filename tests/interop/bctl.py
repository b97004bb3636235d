#!/usr/bin/env python3
"""bctl.py PORT COMMAND [PARAMS] [--wait SECONDS]
Send one command to baresip's ctrl_tcp (netstring-framed JSON) and print the
response and any events that arrive within --wait seconds (default 1)."""
import json, socket, sys, time

def netstring(b): return str(len(b)).encode() + b":" + b + b","

def read_netstrings(sock, deadline):
    buf = b""
    while time.time() < deadline:
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        while b":" in buf:
            n, rest = buf.split(b":", 1)
            n = int(n)
            if len(rest) < n + 1:
                break
            yield json.loads(rest[:n]); buf = rest[n + 1:]

def main():
    args = sys.argv[1:]
    wait = 1.0
    if "--wait" in args:
        i = args.index("--wait"); wait = float(args[i + 1]); del args[i:i + 2]
    port, cmd = int(args[0]), args[1]
    params = " ".join(args[2:])
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    msg = {"command": cmd, "token": "t%d" % int(time.time() * 1000)}
    if params: msg["params"] = params
    s.sendall(netstring(json.dumps(msg).encode()))
    for m in read_netstrings(s, time.time() + wait):
        print(json.dumps(m), flush=True)

if __name__ == "__main__":
    main()
