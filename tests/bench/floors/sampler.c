/* A prototype, for agent_side_by_side.py only: what the agent would cost per second if
   its per-second work were in C, called from its asyncio timer. sample() reads the
   agent's files (opened once by open()), parses every number of each (/proc/stat up to
   its intr line, as the agent's parser stops there), keeps the previous reading for
   rates, packs 70 of them as a msgpack map of float64 values (about the size of a real
   sample) and returns it as a masked WebSocket frame. It is not the agent's schema and
   not a collector: only its work and its system calls are alike. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 32
#define MAX_VALUES 1024
#define ENTRIES 70

static int fds[MAX_FILES], nfds, procfd = -1;
static uint64_t previous[MAX_VALUES], current[MAX_VALUES];
static double previous_time;

static int numbers(const char *text, ssize_t n, uint64_t *into, int room) {
    int found = 0, inside = 0;
    uint64_t value = 0;
    for (ssize_t i = 0; i < n; i++) {
        unsigned digit = (unsigned char)text[i] - '0';
        if (digit < 10) {
            value = value * 10 + digit;
            inside = 1;
        } else if (inside) {
            if (found < room) into[found++] = value;
            value = 0;
            inside = 0;
        }
    }
    if (inside && found < room) into[found++] = value;
    return found;
}

static PyObject *open_files(PyObject *self, PyObject *paths) {
    Py_ssize_t n = PyList_Size(paths);
    for (Py_ssize_t i = 0; i < n && nfds < MAX_FILES; i++) {
        const char *path = PyUnicode_AsUTF8(PyList_GetItem(paths, i));
        if (path == NULL) return NULL;
        fds[nfds++] = open(path, O_RDONLY);
    }
    procfd = open("/proc", O_RDONLY | O_DIRECTORY);
    Py_RETURN_NONE;
}

static PyObject *sample(PyObject *self, PyObject *unused) {
    static char text[65536];
    static unsigned char frame[8 + 3 + ENTRIES * 13];
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double t = now.tv_sec + now.tv_nsec / 1e9, elapsed = t - previous_time;
    previous_time = t;
    int k = 0;
    for (int i = 0; i < nfds; i++) {
        ssize_t n = pread(fds[i], text, sizeof text - 1, 0);
        if (n <= 0) continue;
        text[n] = 0;
        char *intr = strstr(text, "\nintr");
        if (intr != NULL) n = intr - text;
        k += numbers(text, n, current + k, MAX_VALUES - 3 - k);
    }
    struct statvfs fs;
    struct stat st;
    statvfs("/", &fs);
    fstat(procfd, &st);
    current[k++] = fs.f_blocks;
    current[k++] = fs.f_bfree;
    current[k++] = st.st_nlink;
    int entries = k < ENTRIES ? k : ENTRIES;
    unsigned char *p = frame + 8;
    *p++ = 0xde;  /* map 16 */
    *p++ = 0;
    *p++ = (unsigned char)entries;
    for (int i = 0; i < entries; i++) {
        *p++ = 0xa3;  /* fixstr 3 */
        *p++ = 'm';
        *p++ = '0' + i / 10;
        *p++ = '0' + i % 10;
        double rate = elapsed > 0 ? (double)(current[i] - previous[i]) / elapsed : 0.0;
        uint64_t bits;
        memcpy(&bits, &rate, 8);
        *p++ = 0xcb;  /* float 64, big-endian */
        for (int b = 7; b >= 0; b--) *p++ = (unsigned char)(bits >> (8 * b));
    }
    memcpy(previous, current, sizeof(uint64_t) * k);
    size_t length = p - (frame + 8);
    frame[0] = 0x82;  /* FIN, binary */
    frame[1] = 0x80 | 126;  /* masked, 16-bit length */
    frame[2] = length >> 8;
    frame[3] = length & 255;
    uint32_t key = (uint32_t)now.tv_nsec * 2654435761u;  /* a prototype: not a secure key */
    memcpy(frame + 4, &key, 4);
    for (size_t i = 0; i < length; i++) frame[8 + i] ^= frame[4 + (i & 3)];
    return PyBytes_FromStringAndSize((char *)frame, 8 + length);
}

static PyMethodDef methods[] = {
    {"open", open_files, METH_O, "Open the files sample() reads."},
    {"sample", sample, METH_NOARGS, "One sample as a masked WebSocket frame."},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sampler", NULL, -1, methods};
PyMODINIT_FUNC PyInit_sampler(void) { return PyModule_Create(&module); }
