"""The abuse mixed into scripts/soak: for --seconds, every second, from this one process on loopback:
made-up HTTP methods, WHIP POSTs with wrong keys, PATCH and DELETE of made-up sessions, an oversized body, a
stalled body, a few silent and slow-header TCP connections, and a burst of junk STUN datagrams to the media port.
Standard library only. Prints one line of counts per minute."""

import argparse
import http.client
import socket
import threading
import time


def request(host, port, method, path, headers=None, body=None):
    try:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request(method, path, body=body, headers=headers or {})
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return 0


def hold(host, port, seconds, dribble):
    """A connection that says nothing (or a header byte now and then) for `seconds`."""
    try:
        s = socket.create_connection((host, port), timeout=5)
        end = time.time() + seconds
        if dribble:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        while time.time() < end:
            if dribble:
                s.sendall(b"X")
            time.sleep(0.5)
        s.close()
    except OSError:
        pass


def stalled_body(host, port):
    try:
        s = socket.create_connection((host, port), timeout=15)
        s.sendall(b"POST /whip/live HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                  b"Authorization: Bearer zq_wrong\r\nContent-Length: 5000\r\n\r\nv=0\r\n")
        s.recv(4096)
        s.close()
    except OSError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", required=True)
    p.add_argument("--media", required=True)
    p.add_argument("--seconds", type=int, required=True)
    a = p.parse_args()
    host, port = a.http.split(":")
    port = int(port)
    mhost, mport = a.media.split(":")
    mport = int(mport)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stun = bytes([0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]) + bytes(12)
    counts = {}
    end = time.time() + a.seconds
    minute = time.time() + 60
    n = 0
    while time.time() < end:
        n += 1
        for i in range(20):
            s = request(host, port, f"MADEUP{n}X{i}", "/healthz")
            counts[s] = counts.get(s, 0) + 1
        for _ in range(5):
            s = request(host, port, "POST", "/whip/live",
                        {"Content-Type": "application/sdp", "Authorization": "Bearer zq_wrong"}, "v=0\r\n")
            counts[s] = counts.get(s, 0) + 1
        sid = f"{n:032x}"
        frag = "a=mid:0\r\n" + "".join(f"a=candidate:{i} 1 udp 1 127.0.0.1 {9000 + i} typ host\r\n" for i in range(60))
        for method, body in (("PATCH", frag), ("DELETE", None)):
            s = request(host, port, method, f"/whep/live/{sid}",
                        {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}, body)
            counts[s] = counts.get(s, 0) + 1
        s = request(host, port, "POST", "/whip/live",
                    {"Content-Type": "application/sdp", "Authorization": "Bearer zq_wrong"}, "v=0\r\n" * 20000)
        counts[s] = counts.get(s, 0) + 1
        for _ in range(200):
            udp.sendto(stun, (mhost, mport))
        if n % 5 == 0:
            for dribble in (False, True, False):
                threading.Thread(target=hold, args=(host, port, 3, dribble), daemon=True).start()
            threading.Thread(target=stalled_body, args=(host, port), daemon=True).start()
        if time.time() >= minute:
            minute += 60
            print(f"{time.strftime('%H:%M:%S')} statuses so far: {dict(sorted(counts.items()))}", flush=True)
        time.sleep(1)
    print(f"done: {dict(sorted(counts.items()))}", flush=True)


if __name__ == "__main__":
    main()
