/* The agent's floor in C (agent_side_by_side.py): wake once a second, make the agent's
   system calls (argv[1]: files to pread, comma-separated; then a statvfs of / and an
   fstat of /proc) and send 861 bytes to 127.0.0.1:argv[2] (0: no send). Nothing parsed. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    static char buf[65536], payload[861];
    int fds[64], n = 0, sock = -1, port = atoi(argv[2]);
    for (char *f = strtok(argv[1], ","); f && n < 64; f = strtok(NULL, ","))
        fds[n++] = open(f, O_RDONLY);
    int proc = open("/proc", O_RDONLY | O_DIRECTORY);
    if (port) {
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        sock = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(sock, (struct sockaddr *)&to, sizeof to)) return 1;
    }
    struct statvfs fs; struct stat st; struct timespec due;
    clock_gettime(CLOCK_MONOTONIC, &due);
    for (;;) {
        due.tv_sec++;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
        for (int i = 0; i < n; i++) pread(fds[i], buf, sizeof buf, 0);
        if (n) { statvfs("/", &fs); fstat(proc, &st); }
        if (sock >= 0) send(sock, payload, sizeof payload, 0);
    }
}
