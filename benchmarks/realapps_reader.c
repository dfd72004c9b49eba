/* The hot-key reader of benchmarks/realapps.py, in C.
 *
 * Under the test bed's emulator (TCG) every instruction costs ~40x, and the Python reader spends
 * most of a request in the interpreter: it managed a few hundred reads a second there, so a "hot"
 * key was read once a minute and nothing about the hot path could be measured. This reader does
 * the same work as realapps.run_reader -- one GET at a time, each stamped and timed -- with far
 * fewer instructions per request.
 *
 *   realapps_reader redis|memcached PORT KEYS_FILE RUN_FOR_S OUT READY
 *
 * KEYS_FILE: the key indices to ask for, in order, as native uint32 (cycled). Writes OUT as raw
 * native int64 pairs (send time, latency) in ns since its start, OUT.misses with the miss count,
 * and READY (via READY.tmp + rename) holding its start on CLOCK_MONOTONIC, the clock Python's
 * time.perf_counter_ns reads. Stops after RUN_FOR_S or on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "realapps_reader: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A receive buffer: [head, tail) holds bytes not yet parsed. */
static char buf[1 << 17];
static size_t head, tail;
static int sock;

static void more(void)
{
    if (head > 0) {
        memmove(buf, buf + head, tail - head);
        tail -= head;
        head = 0;
    }
    if (tail == sizeof buf) {
        fprintf(stderr, "realapps_reader: reply larger than the buffer\n");
        exit(1);
    }
    ssize_t n;
    do
        n = recv(sock, buf + tail, sizeof buf - tail, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        die("recv");
    if (n == 0) {
        fprintf(stderr, "realapps_reader: the server closed the connection\n");
        exit(1);
    }
    tail += (size_t)n;
}

/* The next CRLF-terminated line (NUL-terminated in place, CRLF dropped). */
static char *line(void)
{
    for (;;) {
        char *start = buf + head;
        char *cr = memmem(start, tail - head, "\r\n", 2);
        if (cr) {
            *cr = 0;
            head = (size_t)(cr + 2 - buf);
            return start;
        }
        more();
    }
}

static void skip(size_t n)
{
    while (tail - head < n)
        more();
    head += n;
}

/* One GET reply; 1 if the key was there. */
static int get_reply(int redis)
{
    char *h = line();
    if (redis) {
        if (strcmp(h, "$-1") == 0)
            return 0;
        if (h[0] != '$') {
            fprintf(stderr, "realapps_reader: redis: unexpected reply %.80s\n", h);
            exit(1);
        }
        skip(strtoul(h + 1, NULL, 10) + 2);
        return 1;
    }
    if (strcmp(h, "END") == 0)
        return 0;
    unsigned long bytes;
    if (sscanf(h, "VALUE %*s %*s %lu", &bytes) != 1) {
        fprintf(stderr, "realapps_reader: memcached: unexpected reply %.80s\n", h);
        exit(1);
    }
    skip(bytes + 2);
    if (strcmp(line(), "END") != 0) {
        fprintf(stderr, "realapps_reader: memcached: no END after the value\n");
        exit(1);
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: realapps_reader redis|memcached PORT KEYS_FILE RUN_FOR_S OUT READY\n");
        return 2;
    }
    int redis = strcmp(argv[1], "redis") == 0;
    int port = atoi(argv[2]);
    double run_for = atof(argv[4]);
    const char *out = argv[5], *ready = argv[6];

    FILE *kf = fopen(argv[3], "rb");
    if (!kf)
        die(argv[3]);
    fseek(kf, 0, SEEK_END);
    size_t nkeys = (size_t)ftell(kf) / sizeof(uint32_t);
    rewind(kf);
    uint32_t *keys = malloc(nkeys * sizeof *keys);
    if (!nkeys || !keys || fread(keys, sizeof *keys, nkeys, kf) != nkeys)
        die("reading the key file");
    fclose(kf);

    /* SA_RESTART: a signal ends the loop after the request in flight, not inside it. */
    struct sigaction sa = {.sa_handler = on_term, .sa_flags = SA_RESTART};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    size_t cap = 1 << 20, n = 0;
    int64_t *rec = malloc(cap * 2 * sizeof *rec);
    if (!rec)
        die("malloc");
    long misses = 0;
    int64_t t0 = now_ns(), end = t0 + (int64_t)(run_for * 1e9);

    char path[4096];
    snprintf(path, sizeof path, "%s.tmp", ready);
    FILE *rf = fopen(path, "w");
    if (!rf || fprintf(rf, "%lld", (long long)t0) < 0 || fclose(rf) != 0 || rename(path, ready) != 0)
        die(ready);

    char req[128];
    for (size_t i = 0; !stop; i++) {
        int64_t t = now_ns();
        if (t > end)
            break;
        char key[16];
        int klen = snprintf(key, sizeof key, "key:%08u", keys[i % nkeys]);
        int len = redis ? snprintf(req, sizeof req, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key)
                        : snprintf(req, sizeof req, "get %s\r\n", key);
        for (int sent = 0; sent < len;) {
            ssize_t w = send(sock, req + sent, (size_t)(len - sent), MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                die("send");
            sent += (int)w;
        }
        misses += !get_reply(redis);
        if (n == cap) {
            cap *= 2;
            rec = realloc(rec, cap * 2 * sizeof *rec);
            if (!rec)
                die("realloc");
        }
        rec[2 * n] = t - t0;
        rec[2 * n + 1] = now_ns() - t;
        n++;
    }
    close(sock);

    FILE *of = fopen(out, "wb");
    if (!of || fwrite(rec, 2 * sizeof *rec, n, of) != n || fclose(of) != 0)
        die(out);
    snprintf(path, sizeof path, "%s.misses", out);
    FILE *mf = fopen(path, "w");
    if (!mf || fprintf(mf, "%ld", misses) < 0 || fclose(mf) != 0)
        die(path);
    return 0;
}
