/*
 * abort_storm_client: N processes that each, until the deadline, connect,
 * send one slow request, wait a random 0..max ms without reading, and close
 * the connection: with a FIN (close()) or a RST (SO_LINGER 0).
 *
 * The connections come from a source address of their own (default
 * 127.0.0.2), so that the server's logs and a packet capture tell them apart
 * from the innocent traffic (wrk connects from 127.0.0.1).
 *
 *   abort_storm_client PORT SECONDS fin|rst [CLIENTS=4] [MIN_MS=1] [MAX_MS=50]
 *                      [PATH=/slow?ms=2000] [SRC=127.0.0.2] [DST=127.0.0.1]
 *
 * Prints one line: clients, mode, connections made, connect errors, send
 * errors. Used by bench/abort_storm_repro; not part of the build.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct counts {
    long made, connect_err, send_err;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void client(int port, double deadline, int rst, long min_ms, long max_ms, const char* path,
                   const char* src, const char* dst, struct counts* out, unsigned seed) {
    char req[512];
    int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    struct sockaddr_in to = {0}, from = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, dst, &to.sin_addr);
    from.sin_family = AF_INET;
    inet_pton(AF_INET, src, &from.sin_addr);
    srand(seed);
    while (now_s() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            out->connect_err++;
            sleep_ms(1);
            continue;
        }
        /* The port is picked at connect() for the whole 4-tuple: bind()
         * alone would need a port free of every TIME_WAIT of earlier runs
         * (slow once thousands are there). */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr*)&from, sizeof from) != 0 ||
            connect(fd, (struct sockaddr*)&to, sizeof to) != 0) {
            out->connect_err++;
            close(fd);
            sleep_ms(1);
            continue;
        }
        out->made++;
        if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
            out->send_err++;
        }
        long wait = min_ms + (max_ms > min_ms ? rand() % (max_ms - min_ms + 1) : 0);
        if (wait > 0) {
            sleep_ms(wait);
        }
        if (rst) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
    }
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s PORT SECONDS fin|rst [CLIENTS] [MIN_MS] [MAX_MS] [PATH] [SRC] [DST]\n",
                argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int rst = strcmp(argv[3], "rst") == 0;
    int clients = argc > 4 ? atoi(argv[4]) : 4;
    long min_ms = argc > 5 ? atol(argv[5]) : 1;
    long max_ms = argc > 6 ? atol(argv[6]) : 50;
    const char* path = argc > 7 ? argv[7] : "/slow?ms=2000";
    const char* src = argc > 8 ? argv[8] : "127.0.0.2";
    const char* dst = argc > 9 ? argv[9] : "127.0.0.1";
    struct counts* shared = mmap(NULL, sizeof(struct counts) * (size_t)clients,
                                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(shared, 0, sizeof(struct counts) * (size_t)clients);
    double deadline = now_s() + seconds;
    for (int i = 0; i < clients; ++i) {
        pid_t pid = fork();
        if (pid == 0) {
            client(port, deadline, rst, min_ms, max_ms, path, src, dst, &shared[i],
                   (unsigned)(getpid() ^ (unsigned)time(NULL)));
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    struct counts t = {0, 0, 0};
    for (int i = 0; i < clients; ++i) {
        t.made += shared[i].made;
        t.connect_err += shared[i].connect_err;
        t.send_err += shared[i].send_err;
    }
    printf("storm clients=%d mode=%s made=%ld connect_err=%ld send_err=%ld\n", clients,
           rst ? "rst" : "fin", t.made, t.connect_err, t.send_err);
    return 0;
}
