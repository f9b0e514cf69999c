/* The null forwarder of null_forwarder.py in C: a measuring stick for `bench sleeve-bound`
 * (compiled with gcc at bench time into a temporary directory; not product code).
 *
 * Same sockets and options as the sleeve (sleeve/sockets.py), same wire as the Python
 * null forwarder (total(4) offset(4) + chunk per datagram), same syscalls per frame:
 * capture: recv (packet socket) -> one sendmsg (single datagram or UDP_SEGMENT train, iovecs
 * into the capture buffer); receive: recvmsg (UDP GRO batch) -> chunks joined (memcpy) -> send
 * (packet socket). Capture and receive in two threads (as the Python one), or two processes
 * with "procs". With "gcm LOCAL REMOTE", every frame is sealed once with AES-256-GCM where
 * it was captured (seq(8) || ciphertext || tag, nonce 0(4) || seq, as the sleeve seals pieces)
 * and opened in place after the join, by OpenSSL's libcrypto loaded with dlopen, so the
 * plain forwarder needs nothing but libc. Keys: the peer names repeated (a measuring
 * stick, never a way to protect anything).
 *
 * "ring": capture from a TPACKET_V2 receive ring instead of recv (two threads, plain).
 *
 *     null_forwarder IFNAME PEER_IP SEG [procs | ring] [gcm LOCAL REMOTE]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <endian.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/udp.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#define PORT 6783
#define HEAD 8
#define CAPTURE_MAX 70000
#define RECV_MAX (65536 + 4096)
#define GSO_MAX_BYTES 65000
#define GSO_MAX_SEGS 64
#define BUF_BYTES (8 << 20)
#define VNET_LEN 10

static int psock, usock, seg;
static struct sockaddr_in peer;

/* OpenSSL's AES-256-GCM (libcrypto, looked up at run time, gcm mode only): the fastest here,
 * 19-23 us per 64 KB against 40-47 for Debian's libsodium 1.0.18 and 24-29 for the libsodium
 * PyNaCl bundles, which the sleeve uses; the same bytes as both (ciphertext || tag). */
typedef void *(*ctx_new_fn)(void);
typedef const void *(*cipher_fn)(void);
typedef int (*init_fn)(void *, const void *, void *, const unsigned char *, const unsigned char *, int);
typedef int (*update_fn)(void *, unsigned char *, int *, const unsigned char *, int);
typedef int (*final_fn)(void *, unsigned char *, int *);
typedef int (*ctrl_fn)(void *, int, int, void *);
static init_fn c_init;
static update_fn c_update;
static final_fn c_final;
static ctrl_fn c_ctrl;
static void *ctx_tx, *ctx_rx;
static int gcm;
#define SEQ 8
#define TAG 16
#define GCM_GET_TAG 0x10
#define GCM_SET_TAG 0x11

static void load_gcm(const char *local, const char *remote) {
    void *h = dlopen("libcrypto.so.3", RTLD_NOW);
    if (!h) { fprintf(stderr, "error: cannot load libcrypto: %s\n", dlerror()); exit(2); }
    ctx_new_fn ctx_new = (ctx_new_fn)dlsym(h, "EVP_CIPHER_CTX_new");
    cipher_fn aes = (cipher_fn)dlsym(h, "EVP_aes_256_gcm");
    c_init = (init_fn)dlsym(h, "EVP_CipherInit_ex");
    c_update = (update_fn)dlsym(h, "EVP_CipherUpdate");
    c_final = (final_fn)dlsym(h, "EVP_CipherFinal_ex");
    c_ctrl = (ctrl_fn)dlsym(h, "EVP_CIPHER_CTX_ctrl");
    if (!ctx_new || !aes || !c_init || !c_update || !c_final || !c_ctrl) {
        fprintf(stderr, "error: libcrypto without the EVP calls needed\n");
        exit(2);
    }
    unsigned char ktx[32], krx[32];
    for (int i = 0; i < 32; i++) {
        ktx[i] = (unsigned char)local[i % strlen(local)];
        krx[i] = (unsigned char)remote[i % strlen(remote)];
    }
    ctx_tx = ctx_new();
    ctx_rx = ctx_new();
    if (!ctx_tx || !ctx_rx || c_init(ctx_tx, aes(), NULL, ktx, NULL, 1) != 1 || c_init(ctx_rx, aes(), NULL, krx, NULL, 0) != 1) {
        fprintf(stderr, "error: AES-256-GCM refused by libcrypto\n");
        exit(2);
    }
    gcm = 1;
}

static void nonce_of(unsigned char nonce[12], uint64_t seq) {
    uint64_t be = htobe64(seq);
    memset(nonce, 0, 4);
    memcpy(nonce + 4, &be, 8);
}

/* seal p[0:n] in place, the tag after it; 0 on success */
static int seal(uint8_t *p, int n, uint64_t seq) {
    unsigned char nonce[12];
    int l;
    nonce_of(nonce, seq);
    if (c_init(ctx_tx, NULL, NULL, NULL, nonce, 1) != 1 || c_update(ctx_tx, p, &l, p, n) != 1
        || c_final(ctx_tx, p + n, &l) != 1 || c_ctrl(ctx_tx, GCM_GET_TAG, TAG, p + n) != 1)
        return -1;
    return 0;
}

/* open p[0:n] (ciphertext || tag) in place; the plaintext length, or -1 */
static int open_box(uint8_t *p, int n, uint64_t seq) {
    unsigned char nonce[12];
    int l, m = n - TAG;
    if (m < 1) return -1;
    nonce_of(nonce, seq);
    if (c_init(ctx_rx, NULL, NULL, NULL, nonce, 0) != 1 || c_update(ctx_rx, p, &l, p, m) != 1
        || c_ctrl(ctx_rx, GCM_SET_TAG, TAG, p + m) != 1 || c_final(ctx_rx, p + m, &l) <= 0)
        return -1;
    return m;
}

/* a frame (gcm: a sealed logical datagram) to the bridge port */
static void inject(uint8_t *p, size_t n) {
    if (gcm) {
        if (n < SEQ + TAG) return;
        uint64_t be;
        memcpy(&be, p, 8);
        int m = open_box(p + SEQ, (int)(n - SEQ), be64toh(be));
        if (m > 0) send(psock, p + SEQ, (size_t)m, MSG_DONTWAIT);
        return;
    }
    send(psock, p, n, MSG_DONTWAIT);
}

static void die(const char *what) {
    fprintf(stderr, "error: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void buffers(int s) {
    int v = BUF_BYTES;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) < 0)
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

static void put32(uint8_t *p, uint32_t v) { v = htonl(v); memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return ntohl(v); }

/* frame p[0:n] to the peer: one datagram or UDP_SEGMENT trains of pieces (iovecs into p) */
static void send_frame(uint8_t *p, ssize_t n) {
    static uint8_t heads[GSO_MAX_SEGS][HEAD];
    struct iovec iov[2 * GSO_MAX_SEGS];
    char ctl[CMSG_SPACE(sizeof(uint16_t))];
    int chunk = seg - HEAD;
    int per = GSO_MAX_BYTES / seg;
    if (per > GSO_MAX_SEGS) per = GSO_MAX_SEGS;
    if (per < 1) per = 1;
    for (ssize_t first = 0; first < n; first += (ssize_t)chunk * per) {
        int k = 0;
        for (ssize_t o = first; o < n && k < per; o += chunk, k++) {
            put32(heads[k], (uint32_t)n);
            put32(heads[k] + 4, (uint32_t)o);
            iov[2 * k].iov_base = heads[k];
            iov[2 * k].iov_len = HEAD;
            iov[2 * k + 1].iov_base = p + o;
            iov[2 * k + 1].iov_len = (size_t)(n - o < chunk ? n - o : chunk);
        }
        struct msghdr m = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = iov,
                           .msg_iovlen = (size_t)(2 * k)};
        if (k > 1) {
            m.msg_control = ctl;
            m.msg_controllen = sizeof ctl;
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t s = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &s, sizeof s);
        }
        sendmsg(usock, &m, MSG_DONTWAIT);     /* a full queue loses the frame, as in any forwarder */
    }
}

static void *capture_loop(void *arg) {
    (void)arg;
    static uint8_t room[SEQ + CAPTURE_MAX + TAG];
    uint8_t *buf = gcm ? room : room + SEQ;   /* what leaves: gcm seq || sealed frame, else the frame */
    uint64_t seq = 0;
    for (;;) {
        ssize_t n = recv(psock, room + SEQ, CAPTURE_MAX, 0);
        if (n <= 0) continue;
        if (gcm) {
            uint64_t be = htobe64(++seq);
            if (seal(room + SEQ, (int)n, seq) != 0) continue;
            memcpy(room, &be, 8);
            n += SEQ + TAG;
        }
        send_frame(buf, n);
    }
    return NULL;
}

/* capture from a TPACKET_V2 receive ring: frames sent from their slots, poll only when empty */
#define RING_FRAME (1 << 17)
#define RING_FRAMES 64
static void *ring_capture_loop(void *arg) {
    (void)arg;
    int v = TPACKET_V2;
    struct tpacket_req req = {RING_FRAME, RING_FRAMES, RING_FRAME, RING_FRAMES};
    if (setsockopt(psock, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0) die("PACKET_VERSION");
    if (setsockopt(psock, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) die("PACKET_RX_RING");
    uint8_t *ring = mmap(NULL, (size_t)RING_FRAME * RING_FRAMES, PROT_READ | PROT_WRITE, MAP_SHARED, psock, 0);
    if (ring == MAP_FAILED) die("mmap ring");
    struct pollfd pfd = {.fd = psock, .events = POLLIN | POLLERR};
    for (unsigned i = 0;; i = (i + 1) % RING_FRAMES) {
        volatile struct tpacket2_hdr *h = (void *)(ring + (size_t)i * RING_FRAME);
        while (!(h->tp_status & TP_STATUS_USER)) poll(&pfd, 1, -1);
        __sync_synchronize();
        send_frame((uint8_t *)h + h->tp_mac - VNET_LEN, (ssize_t)h->tp_snaplen + VNET_LEN);
        __sync_synchronize();
        h->tp_status = TP_STATUS_KERNEL;
    }
    return NULL;
}

static void *receive_loop(void *arg) {
    (void)arg;
    static uint8_t buf[RECV_MAX], out[RECV_MAX];
    char ctl[CMSG_SPACE(sizeof(int))];
    size_t want = 0, total = 0;                /* the frame being joined piece by piece */
    for (;;) {
        struct iovec v = {buf, sizeof buf};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
        ssize_t n = recvmsg(usock, &m, 0);
        if (n < HEAD) continue;
        ssize_t g = n;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int s;
                memcpy(&s, CMSG_DATA(c), sizeof s);
                if (s > HEAD) g = s;
            }
        size_t t = get32(buf), off = get32(buf + 4);
        ssize_t chunk = g - HEAD;
        if (g >= n && off == 0 && (size_t)(n - HEAD) >= t) {           /* one datagram */
            inject(buf + HEAD, t);
            continue;
        }
        if (g < n && off == 0 && (size_t)n == t + HEAD * ((t + chunk - 1) / chunk)) {   /* one whole train */
            size_t w = 0;
            for (ssize_t q = 0; q < n; q += g) {
                size_t len = (size_t)((q + g < n ? g : n - q) - HEAD);
                memcpy(out + w, buf + q + HEAD, len);
                w += len;
            }
            inject(out, w);
            continue;
        }
        for (ssize_t q = 0; q < n; q += g) {                          /* piece by piece */
            ssize_t end = q + g < n ? q + g : n;
            if (end - q < HEAD) break;
            size_t pt = get32(buf + q), po = get32(buf + q + 4), len = (size_t)(end - q - HEAD);
            if (po == 0 && len >= pt) {
                inject(buf + q + HEAD, pt);
                want = 0;
                continue;
            }
            if (po == 0) { total = pt; want = 0; }
            if (po != want || pt != total || want + len > sizeof out) { want = 0; total = 0; continue; }
            memcpy(out + want, buf + q + HEAD, len);
            want += len;
            if (want >= total) {
                inject(out, total);
                want = 0;
                total = 0;
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s IFNAME PEER_IP SEG [procs | ring] [gcm LOCAL REMOTE]\n", argv[0]);
        return 2;
    }
    seg = atoi(argv[3]);
    if (seg <= HEAD || seg > 65507) { fprintf(stderr, "error: bad SEG %s\n", argv[3]); return 2; }
    int one = 1;

    psock = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (psock < 0) die("packet socket");
    if (setsockopt(psock, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) die("PACKET_VNET_HDR");
    if (setsockopt(psock, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) die("PACKET_IGNORE_OUTGOING");
    setsockopt(psock, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    buffers(psock);
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                             .sll_ifindex = (int)if_nametoindex(argv[1])};
    if (!ll.sll_ifindex) die("interface");
    if (bind(psock, (struct sockaddr *)&ll, sizeof ll) < 0) die("bind packet socket");

    usock = socket(AF_INET, SOCK_DGRAM, 0);
    if (usock < 0) die("udp socket");
    setsockopt(usock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int pmtu = IP_PMTUDISC_DONT;
    setsockopt(usock, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    buffers(usock);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(PORT), .sin_addr.s_addr = INADDR_ANY};
    if (bind(usock, (struct sockaddr *)&me, sizeof me) < 0) die("bind udp");
    if (setsockopt(usock, SOL_UDP, UDP_GRO, &one, sizeof one) < 0) die("UDP_GRO");

    peer.sin_family = AF_INET;
    peer.sin_port = htons(PORT);
    if (inet_pton(AF_INET, argv[2], &peer.sin_addr) != 1) { fprintf(stderr, "error: bad PEER_IP\n"); return 2; }

    int procs = 0, ring = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "procs") == 0) {
            procs = 1;
        } else if (strcmp(argv[i], "ring") == 0) {
            ring = 1;
        } else if (strcmp(argv[i], "gcm") == 0 && i + 2 < argc && *argv[i + 1] && *argv[i + 2]) {
            load_gcm(argv[i + 1], argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "error: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (procs) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            receive_loop(NULL);
            return 0;
        }
        capture_loop(NULL);
        return 0;
    }
    if (ring && (procs || gcm)) { fprintf(stderr, "error: ring goes with neither procs nor gcm\n"); return 2; }
    pthread_t t;
    if (pthread_create(&t, NULL, receive_loop, NULL) != 0) die("thread");
    if (ring) ring_capture_loop(NULL);
    capture_loop(NULL);
    return 0;
}
