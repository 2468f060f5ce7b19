"""Two reference relays in C, compiled at bench time (``cc -O2``): the machine's ceilings.

Neither speaks TURN. They are what a relay costs on this machine when nothing but the bytes'
path is left, so that a row of ours can be read against what any relay process could do here:

- ``splice_relay``: a TCP relay for any number of connections. It listens on 127.0.0.1; for
  every accepted client connection it connects to the peer address given on its command line
  and moves bytes both ways with ``splice(2)`` through one pipe per direction (``F_SETPIPE_SZ``
  as ``bench/pipe_bench.py``), all connections in one level-triggered ``epoll`` loop, every
  socket non-blocking. A client's EOF becomes a ``shutdown(SHUT_WR)`` towards the peer once its
  pipe is drained (and the other way round); a connection pair is closed when both directions
  have ended or on any error. A direction whose destination is full stops reading its source
  (``EPOLLIN`` off) and waits for ``EPOLLOUT`` on the destination.
- ``udp_forwarder``: reads datagrams on 127.0.0.1 with ``recvmmsg(2)`` (up to 64 per call,
  ``MSG_WAITFORONE``), drops each one's first 4 bytes (a ChannelData header, RFC 8656 §12.4,
  not parsed) and sends the rest to the peer address with ``sendmmsg(2)`` from a second socket.

Both print their listening port on stdout, then run until killed or until their own bound
(``max_seconds`` on the command line; the UDP forwarder also stops after that long without a
datagram), so a forgotten process cannot outlive the bench for long.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from bench.common import OUT_DIR, NotAvailable

SPLICE_RELAY = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* usage: splice_relay PEER_PORT PIPE_BYTES MAX_SECONDS */

enum { ROUNDS = 16, EVENTS = 256 };

struct dir {               /* one direction: src -> pipe -> dst */
    int pipe_r, pipe_w;
    size_t queued;         /* bytes in the pipe */
    int eof, ended, blocked;
};

struct side {              /* one socket of a pair; epoll's data.ptr points here */
    int fd, mask;
    struct conn *conn;
    int is_peer;
};

struct conn {
    struct side client, peer;
    struct dir up, down;   /* up: client -> peer; down: peer -> client */
    long served;           /* the epoll round that last served it: once per round */
    struct conn *next_dead; /* freed after the round, so later events of the round are safe */
};

static struct conn *dead;

static int ep;
static size_t pipe_bytes;

static int nonblock(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int make_dir(struct dir *d) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC)) return -1;
    fcntl(p[1], F_SETPIPE_SZ, (int)pipe_bytes); /* best effort, as pipe_bench */
    d->pipe_r = p[0];
    d->pipe_w = p[1];
    return 0;
}

static void close_conn(struct conn *c) {
    close(c->client.fd);
    close(c->peer.fd);
    close(c->up.pipe_r);
    close(c->up.pipe_w);
    close(c->down.pipe_r);
    close(c->down.pipe_w);
    c->served = -1;
    c->next_dead = dead;
    dead = c;
}

static void free_dead(void) {
    for (struct conn *c; (c = dead);) {
        dead = c->next_dead;
        free(c);
    }
}

/* Move what is ready from src to dst, bounded; 0 ok, -1 error. */
static int pump(struct dir *d, int src, int dst) {
    for (int i = 0; i < ROUNDS && !d->ended; i++) {
        if (d->queued) {
            ssize_t n = splice(d->pipe_r, 0, dst, 0, d->queued, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN) { d->blocked = 1; return 0; }
                return -1;
            }
            d->queued -= (size_t)n;
            d->blocked = 0;
            continue;
        }
        if (d->eof) {
            shutdown(dst, SHUT_WR);
            d->ended = 1;
            return 0;
        }
        ssize_t n = splice(src, 0, d->pipe_w, 0, pipe_bytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n == 0) d->eof = 1;
        else if (n < 0) return errno == EAGAIN ? 0 : -1;
        else d->queued += (size_t)n;
    }
    return 0;
}

/* The events a side waits for: readable while its outgoing pipe is not blocked, writable while
   its incoming pipe is. */
static int wanted(const struct dir *out, const struct dir *in) {
    int m = 0;
    if (!out->eof && !out->blocked) m |= EPOLLIN;
    if (in->blocked) m |= EPOLLOUT;
    return m;
}

static int update(struct side *s, int mask) {
    if (mask == s->mask || s->mask < 0) return 0; /* mask -1: hung up, out of the set */
    struct epoll_event ev = {.events = (uint32_t)mask, .data.ptr = s};
    s->mask = mask;
    return epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void serve(struct conn *c) {
    if (pump(&c->up, c->client.fd, c->peer.fd) || pump(&c->down, c->peer.fd, c->client.fd) ||
        update(&c->client, wanted(&c->up, &c->down)) ||
        update(&c->peer, wanted(&c->down, &c->up)) || (c->up.ended && c->down.ended))
        close_conn(c); /* closing removes both sockets from the epoll set */
}

static int add(struct side *s) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    s->mask = EPOLLIN;
    return epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void accept_one(int lst, const struct sockaddr_in *peer_addr) {
    int a = accept4(lst, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (a < 0) return;
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct conn *c = calloc(1, sizeof *c);
    /* a blocking connect on loopback: the pair exists before any byte moves */
    if (b < 0 || !c || connect(b, (const void *)peer_addr, sizeof *peer_addr) || nonblock(b) ||
        make_dir(&c->up) || make_dir(&c->down)) {
        close(a);
        if (b >= 0) close(b);
        free(c);
        return;
    }
    c->client = (struct side){.fd = a, .conn = c, .is_peer = 0};
    c->peer = (struct side){.fd = b, .conn = c, .is_peer = 1};
    if (add(&c->client) || add(&c->peer)) close_conn(c);
}

int main(int argc, char **argv) {
    if (argc != 4) return 64;
    pipe_bytes = (size_t)atol(argv[2]);
    time_t end = time(0) + atol(argv[3]);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in peer = la;
    peer.sin_port = htons((uint16_t)atoi(argv[1]));
    socklen_t len = sizeof la;
    int one = 1, lst = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lst, (void *)&la, len) || listen(lst, 1024) || getsockname(lst, (void *)&la, &len))
        return 1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = 0};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev)) return 1;
    printf("%d\n", ntohs(la.sin_port));
    fflush(stdout);
    struct epoll_event evs[EVENTS];
    for (long round = 1; time(0) < end; round++) {
        int n = epoll_wait(ep, evs, EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            struct side *s = evs[i].data.ptr;
            if (!s) {
                for (int k = 0; k < 64; k++) accept_one(lst, &peer);
            } else if (s->conn->served >= 0 && s->conn->served != round) {
                struct conn *c = s->conn;
                c->served = round; /* serve() handles both sockets of the pair */
                serve(c);
                if (c->served < 0) continue;
                if (evs[i].events & EPOLLERR) {
                    close_conn(c);
                } else if (evs[i].events & EPOLLHUP) { /* both ways shut: nothing to wait for */
                    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, 0);
                    s->mask = -1;
                }
            }
        }
        free_dead();
    }
    return 0;
}
"""

UDP_FORWARDER = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* usage: udp_forwarder PEER_PORT RCVBUF_BYTES MAX_SECONDS */

enum { BATCH = 64, SIZE = 2048, HEADER = 4 };

int main(int argc, char **argv) {
    if (argc != 4) return 64;
    int rcvbuf = atoi(argv[2]);
    long max_s = atol(argv[3]);
    time_t end = time(0) + max_s;
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in peer = la, out_addr = la;
    peer.sin_port = htons((uint16_t)atoi(argv[1]));
    socklen_t len = sizeof la;
    int in = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int out = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct timeval idle = {.tv_sec = max_s};
    if (in < 0 || out < 0) return 1;
    setsockopt(in, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(in, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle); /* a bounded wait */
    if (bind(in, (void *)&la, len) || getsockname(in, (void *)&la, &len) ||
        bind(out, (void *)&out_addr, sizeof out_addr))
        return 1;
    printf("%d\n", ntohs(la.sin_port));
    fflush(stdout);
    static char bufs[BATCH][SIZE];
    struct iovec rio[BATCH], sio[BATCH];
    struct mmsghdr rmsg[BATCH], smsg[BATCH];
    for (int i = 0; i < BATCH; i++) {
        rio[i] = (struct iovec){.iov_base = bufs[i], .iov_len = SIZE};
        rmsg[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &rio[i], .msg_iovlen = 1}};
        sio[i] = (struct iovec){.iov_base = bufs[i] + HEADER};
        smsg[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &peer, .msg_namelen = sizeof peer,
                                               .msg_iov = &sio[i], .msg_iovlen = 1}};
    }
    while (time(0) < end) {
        int n = recvmmsg(in, rmsg, BATCH, MSG_WAITFORONE, 0);
        if (n <= 0) break; /* idle for max_s, or an error */
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (rmsg[i].msg_len < HEADER) continue;
            sio[m].iov_base = bufs[i] + HEADER;
            sio[m].iov_len = rmsg[i].msg_len - HEADER;
            m++;
        }
        for (int sent = 0, k; sent < m; sent += k)
            if ((k = sendmmsg(out, smsg + sent, (unsigned)(m - sent), 0)) <= 0) break;
    }
    return 0;
}
"""

SOURCES = {"splice_relay": SPLICE_RELAY, "udp_forwarder": UDP_FORWARDER}


def compiler() -> str | None:
    """The C compiler on PATH (``cc``, else ``gcc``), or None."""
    return shutil.which("cc") or shutil.which("gcc")


@cache
def build(name: str) -> Path:
    """Compile one of ``SOURCES`` with ``cc -O2`` into bench/out/build/ (once per run)."""
    cc = compiler()
    if cc is None:
        raise NotAvailable("no C compiler (cc) on PATH")
    if not sys.platform.startswith("linux"):
        raise NotAvailable("splice(2) and recvmmsg(2) are Linux only")
    directory = OUT_DIR / "build"
    directory.mkdir(parents=True, exist_ok=True)
    source, binary = directory / f"{name}.c", directory / name
    source.write_text(SOURCES[name])
    try:
        out = subprocess.run(
            [cc, "-O2", "-Wall", "-o", str(binary), str(source)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotAvailable(f"cc failed: {exc}") from None
    if out.returncode != 0:
        raise NotAvailable(f"cc failed: {out.stderr.strip()[-300:]}")
    return binary
