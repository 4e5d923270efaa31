/* The agent's per-second sample in C: reads, parsing, rates, the packed ``sample`` frame
   (masked, ready to send) and the minute summary, in one call from the sampling timer.

   Why it exists: at one sample a second a Python process starts cold every time, and the
   collectors' parsing and the building and packing of the metrics map cost about 0.4 ms
   of CPU a second on top of the system calls themselves -- more than the agent's whole
   budget (docs/benchmarks.md, "The same floor without Python"). Here the numbers go from
   the kernel's text straight into msgpack, with no Python object per value.

   What it is not: a second set of collectors. Everything that is decided rarely stays in
   Python (collectors/native.py): which filesystems, disks and sensors count, the packed
   names of those rows, and the constants behind the process count and the uptime. This
   file only does, every second, what the Python collectors and summary.MinuteAggregator
   do every second, by the same rules and in the same order, so that both give equal
   values from equal inputs (tests/agent/test_native.py checks that value for value). Python owns every file descriptor; this code only
   preads them.

   Any input it does not understand makes sample() raise ValueError or OSError naming the
   file: the caller then hands sampling over to the Python collectors for good, which
   have a fallback for every odd case. Every parse is bounded by the bytes read. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../frame.h"

#define MAX_CPUS 65536    /* the schema's bound on cpu_cores */
#define MAX_ROWS 1024     /* disks, filesystems, interfaces: the schema's row bound */
#define MAX_NAME 255      /* an interface name longer than this is cut, as in Python */
#define WHOLE 2048        /* a shorter read is the whole file (procfs.ProcFile) */
#define CHUNK 65536
#define SECTOR 512
#define NAMES 18          /* SUMMARY_NAMES: the values of a minute summary */
#define MAX_MINUTE_ROWS 3600
#define LIMIT 1e18        /* the bound of an aggregate value on the wire */

/* ---- a growing byte buffer and msgpack writers ---------------------------------- */

typedef struct {
    unsigned char *data;
    size_t len, cap;
} Buf;

static int grow(Buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    unsigned char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buf *b, const void *bytes, size_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int put_be(Buf *b, unsigned char tag, uint64_t value, int size) {
    unsigned char out[9];
    out[0] = tag;
    for (int i = 0; i < size; i++) out[1 + i] = (unsigned char)(value >> (8 * (size - 1 - i)));
    return put(b, out, 1 + (size_t)size);
}

static int pack_container(Buf *b, size_t n, unsigned char fix, unsigned char tag16,
                          unsigned char tag32) {
    if (n < 16) {
        unsigned char c = (unsigned char)(fix | n);
        return put(b, &c, 1);
    }
    return n < 65536 ? put_be(b, tag16, n, 2) : put_be(b, tag32, n, 4);
}

static int pack_map(Buf *b, size_t n) { return pack_container(b, n, 0x80, 0xde, 0xdf); }
static int pack_array(Buf *b, size_t n) { return pack_container(b, n, 0x90, 0xdc, 0xdd); }

/* A short ASCII key: every key written here is under 32 bytes (fixstr). */
static int pack_key(Buf *b, const char *key) {
    size_t n = strlen(key);
    unsigned char c = (unsigned char)(0xa0 | n);
    if (put(b, &c, 1) < 0) return -1;
    return put(b, key, n);
}

static int pack_double(Buf *b, double value) {
    uint64_t bits;
    memcpy(&bits, &value, 8);
    return put_be(b, 0xcb, bits, 8);
}

/* A non-negative integer in its smallest form, as msgpack-python packs an int. */
static int pack_uint(Buf *b, uint64_t v) {
    if (v < 128) {
        unsigned char c = (unsigned char)v;
        return put(b, &c, 1);
    }
    if (v < 256) return put_be(b, 0xcc, v, 1);
    if (v < 65536) return put_be(b, 0xcd, v, 2);
    if (v < 4294967296ULL) return put_be(b, 0xce, v, 4);
    return put_be(b, 0xcf, v, 8);
}

static int pack_str(Buf *b, const char *s, size_t n) {
    if (n < 32) {
        unsigned char c = (unsigned char)(0xa0 | n);
        if (put(b, &c, 1) < 0) return -1;
    } else if (n < 256) {
        if (put_be(b, 0xd9, n, 1) < 0) return -1;
    } else if (n < 65536) {
        if (put_be(b, 0xda, n, 2) < 0) return -1;
    } else if (put_be(b, 0xdb, n, 4) < 0) {
        return -1;
    }
    return put(b, s, n);
}

static int kv_double(Buf *b, const char *key, double value) {
    return pack_key(b, key) < 0 ? -1 : pack_double(b, value);
}

static int kv_uint(Buf *b, const char *key, uint64_t value) {
    return pack_key(b, key) < 0 ? -1 : pack_uint(b, value);
}

/* ---- reading and parsing ----------------------------------------------------------- */

/* The whole of a kept-open /proc or /sys file into ``text`` after a leading '\n' (so a
   needle "\nKey:" also finds the first line) and NUL-terminated: ProcFile.read's rules
   (a read shorter than WHOLE is the whole file; else read on until an empty read).
   Returns the length after the '\n', or -1 with errno set. */
static Py_ssize_t read_whole(int fd, Buf *text) {
    text->len = 0;
    if (grow(text, 1) < 0) return -2;
    text->data[text->len++] = '\n';
    for (;;) {
        if (grow(text, CHUNK + 1) < 0) return -2;
        ssize_t n = pread(fd, text->data + text->len, CHUNK, (off_t)(text->len - 1));
        if (n < 0) return -1;
        text->len += (size_t)n;
        if (n == 0 || (text->len == 1 + (size_t)n && n < WHOLE)) break;
    }
    text->data[text->len] = 0;
    return (Py_ssize_t)(text->len - 1);
}

/* Both return -1 with the exception set, for "return cannot_read(...);". */
static int cannot_read(const char *what) {
    PyErr_Format(PyExc_OSError, "cannot read %s: %s", what, strerror(errno));
    return -1;
}

static int unexpected(const char *what) {
    PyErr_Format(PyExc_ValueError, "unexpected content in %s", what);
    return -1;
}

/* Skips spaces and tabs, then reads a decimal number of at most 19 digits (so it fits in
   an int64). Returns the position after it, or NULL when there is no digit there. */
static const char *number(const char *p, const char *end, uint64_t *out) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    const char *start = p;
    uint64_t value = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 19) value = value * 10 + (uint64_t)(*p++ - '0');
    if (p == start || (p < end && *p >= '0' && *p <= '9')) return NULL;
    *out = value;
    return p;
}

static const char *line_end(const char *p, const char *end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl : end;
}

/* ---- the sampler object ------------------------------------------------------------- */

typedef struct {
    uint64_t total, idle;
    uint64_t seen; /* the sample number it was last read at; 0: never */
} Cpu;

typedef struct {
    char name[MAX_NAME + 1];
    size_t len;
    double rx, tx;
} Iface;

typedef struct {
    char name[MAX_NAME + 1];
    size_t len;
    int physical;
    PyObject *packed; /* bytes: "iface" and its value, packed */
} Known;

typedef struct {
    PyObject *key;    /* bytes: the device's name, to carry its last reading over a relist */
    PyObject *packed; /* bytes: "device" and its value, packed */
    int fd, physical, valid;
    double last[4];   /* read bytes, write bytes, reads, writes */
} Disk;

typedef struct {
    PyObject *packed; /* bytes: "mount", "type", "device" and their values, packed */
    PyObject *path;   /* bytes */
} Filesystem;

typedef struct {
    PyObject *packed; /* bytes: "label" and its value, packed */
    int fd;
} Sensor;

typedef struct {
    PyObject_HEAD
    int stat_fd, loadavg_fd, meminfo_fd, net_dev_fd, sockstat_fd, sockstat6_fd, virtual_net_fd;
    int proc_fd;         /* /proc: its link count is the process count plus ``offset`` */
    int has_offset;
    int64_t offset;
    double boot;         /* unix time of boot, for the uptime */
    uint64_t samples;
    Cpu *cpus;
    size_t ncpus;
    Iface *ifaces, *previous;
    size_t nifaces, nprevious;
    Known *known;
    size_t nknown;
    double net_at, disks_at; /* monotonic time of the last reading; NAN: none yet */
    Disk *disks;
    size_t ndisks;
    Filesystem *filesystems;
    size_t nfilesystems;
    Sensor *sensors;
    size_t nsensors;
    Buf text, text2, out;
    int ready; /* __init__ has run: the descriptors are set */
    /* the minute summary being built (summary.MinuteAggregator's rules) */
    PyObject *names; /* SUMMARY_NAMES */
    int in_minute;
    int64_t minute;
    uint64_t minute_samples, minute_rows, count[NAMES];
    double sum[NAMES], low[NAMES], high[NAMES], rx_moved, tx_moved;
    /* WebSocket masking keys, 64 per getrandom call (as websocket._MaskKeys) */
    unsigned char keys[256];
    size_t next_key;
} Sampler;

/* -- cpu: /proc/stat ----------------------------------------------------------------- */

/* The cpu lines' busy percentages, written as "cpu" and "cpu_cores"; *total for the row. */
static int cpu_collect(Sampler *s, Buf *out, double *total, int write) {
    Py_ssize_t n = read_whole(s->stat_fd, &s->text);
    if (n == -2) return -1;
    if (n < 0) return cannot_read("/proc/stat");
    const char *p = (const char *)s->text.data + 1, *end = p + n;
    s->samples++;
    double busy_total = 0.0;
    size_t cores = 0;
    Buf *values = &s->text2;
    values->len = 0;
    while (p < end && end - p > 3 && memcmp(p, "cpu", 3) == 0) {
        const char *eol = line_end(p, end);
        p += 3;
        size_t index = 0; /* 0: the total line; 1 + N: cpuN */
        if (*p >= '0' && *p <= '9') {
            uint64_t id;
            p = number(p, eol, &id);
            if (p == NULL || id >= MAX_CPUS) return unexpected("/proc/stat");
            index = (size_t)id + 1;
        }
        if (p >= eol || (*p != ' ' && *p != '\t')) return unexpected("/proc/stat");
        uint64_t f[8];
        for (int i = 0; i < 8; i++) {
            p = number(p, eol, &f[i]);
            if (p == NULL) return unexpected("/proc/stat");
        }
        uint64_t ticks = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
        uint64_t idle = f[3] + f[4];
        if (index >= s->ncpus) {
            size_t count = index + 1 > 2 * s->ncpus ? index + 1 : 2 * s->ncpus;
            Cpu *cpus = PyMem_Realloc(s->cpus, count * sizeof(Cpu));
            if (cpus == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memset(cpus + s->ncpus, 0, (count - s->ncpus) * sizeof(Cpu));
            s->cpus = cpus;
            s->ncpus = count;
        }
        Cpu *c = &s->cpus[index];
        double busy = 0.0;
        if (c->seen != 0 && c->seen == s->samples - 1) {
            int64_t elapsed = (int64_t)(ticks - c->total);
            if (elapsed > 0) {
                int64_t idled = (int64_t)(idle - c->idle);
                busy = 100.0 * (double)(elapsed - idled) / (double)elapsed;
                busy = busy > 100.0 ? 100.0 : busy < 0.0 ? 0.0 : busy;
            }
        }
        c->total = ticks;
        c->idle = idle;
        c->seen = s->samples;
        if (index == 0) {
            busy_total = busy;
        } else {
            if (pack_double(values, busy) < 0) return -1;
            cores++;
        }
        p = eol < end ? eol + 1 : end;
    }
    *total = busy_total;
    if (!write) return 0;
    if (kv_double(out, "cpu", busy_total) < 0 || pack_key(out, "cpu_cores") < 0 ||
        pack_array(out, cores) < 0)
        return -1;
    return put(out, values->data, values->len);
}

/* -- load: /proc/loadavg ------------------------------------------------------------- */

static int load_collect(Sampler *s, Buf *out, double load[3]) {
    Py_ssize_t n = read_whole(s->loadavg_fd, &s->text);
    if (n == -2) return -1;
    if (n <= 0) { /* unreadable: glibc's getloadavg, clamped, as LoadCollector does */
        if (getloadavg(load, 3) != 3) return cannot_read("/proc/loadavg");
        for (int i = 0; i < 3; i++) load[i] = load[i] > 0.0 ? load[i] : 0.0;
    } else {
        const char *p = (const char *)s->text.data + 1;
        for (int i = 0; i < 3; i++) {
            char *after;
            while (*p == ' ' || *p == '\t') p++;
            if (!(*p >= '0' && *p <= '9')) return unexpected("/proc/loadavg");
            errno = 0;
            load[i] = strtod(p, &after);
            if (after == p || errno != 0 || (*after != ' ' && *after != '\t' && *after != '\n'))
                return unexpected("/proc/loadavg");
            p = after;
        }
    }
    if (pack_key(out, "load") < 0 || pack_array(out, 3) < 0) return -1;
    for (int i = 0; i < 3; i++)
        if (pack_double(out, load[i]) < 0) return -1;
    return 0;
}

/* -- memory and swap: /proc/meminfo --------------------------------------------------- */

static const char *const MEMINFO[] = {"\nMemTotal:", "\nMemFree:", "\nMemAvailable:",
                                      "\nBuffers:", "\nCached:", "\nSwapTotal:", "\nSwapFree:"};
enum { MEM_TOTAL, MEM_FREE, MEM_AVAILABLE, BUFFERS, CACHED, SWAP_TOTAL, SWAP_FREE, NMEMINFO };

static int memory_collect(Sampler *s, Buf *out, double *used_out, double *percent_out,
                          double *swap_used_out) {
    Py_ssize_t n = read_whole(s->meminfo_fd, &s->text);
    if (n == -2) return -1;
    if (n < 0) return cannot_read("/proc/meminfo");
    const char *text = (const char *)s->text.data, *end = text + 1 + n;
    int64_t v[NMEMINFO];
    int have[NMEMINFO];
    for (int i = 0; i < NMEMINFO; i++) {
        const char *at = strstr(text, MEMINFO[i]);
        have[i] = at != NULL;
        v[i] = 0;
        if (at != NULL) {
            uint64_t kib;
            const char *p = number(at + strlen(MEMINFO[i]), end, &kib);
            if (p == NULL || kib > (UINT64_C(1) << 50)) return unexpected("/proc/meminfo");
            if (strncmp(p, " kB", 3) == 0) p += 3;
            while (p < end && (*p == ' ' || *p == '\t')) p++;
            if (p < end && *p != '\n') return unexpected("/proc/meminfo");
            v[i] = (int64_t)kib * 1024;
        }
    }
    int64_t total = v[MEM_TOTAL];
    int64_t available = have[MEM_AVAILABLE] ? v[MEM_AVAILABLE] : v[MEM_FREE] + v[BUFFERS] + v[CACHED];
    if (available > total) available = total;
    int64_t used = total - available;
    int64_t swap_total = v[SWAP_TOTAL];
    int64_t swap_used = swap_total - v[SWAP_FREE];
    if (swap_used < 0) swap_used = 0;
    double percent = total ? 100.0 * (double)used / (double)total : 0.0;
    double swap_percent = swap_total ? 100.0 * (double)swap_used / (double)swap_total : 0.0;
    *used_out = (double)used;
    *percent_out = percent;
    *swap_used_out = (double)swap_used;
    if (pack_key(out, "memory") < 0 || pack_map(out, 4) < 0 ||
        kv_double(out, "total", (double)total) < 0 || kv_double(out, "used", (double)used) < 0 ||
        kv_double(out, "available", (double)available) < 0 ||
        kv_double(out, "percent", percent) < 0)
        return -1;
    if (pack_key(out, "swap") < 0 || pack_map(out, 3) < 0 ||
        kv_double(out, "total", (double)swap_total) < 0 ||
        kv_double(out, "used", (double)swap_used) < 0 ||
        kv_double(out, "percent", swap_percent) < 0)
        return -1;
    return 0;
}

/* -- filesystems: statvfs of each mount Python chose ----------------------------------- */

static int filesystems_collect(Sampler *s, Buf *out, double *disk_percent, int *has_disk) {
    Buf *rows = &s->text2;
    rows->len = 0;
    size_t count = 0;
    double used_sum = 0.0, free_sum = 0.0;
    for (size_t i = 0; i < s->nfilesystems; i++) {
        Filesystem *f = &s->filesystems[i];
        struct statvfs st;
        if (statvfs(PyBytes_AS_STRING(f->path), &st) != 0) continue; /* unmounted meanwhile */
        __int128 frsize = st.f_frsize;
        __int128 size = (__int128)st.f_blocks * frsize;
        if (size <= 0) continue;
        __int128 free_ = (__int128)st.f_bavail * frsize;
        __int128 used = ((__int128)st.f_blocks - (__int128)st.f_bfree) * frsize;
        double percent = 0.0;
        if (used + free_ != 0) {
            percent = 100.0 * (double)used / (double)(used + free_);
            if (percent > 100.0) percent = 100.0;
        }
        int inodes = st.f_files > 0;
        if (pack_map(rows, inodes ? 9 : 7) < 0 ||
            put(rows, PyBytes_AS_STRING(f->packed), (size_t)PyBytes_GET_SIZE(f->packed)) < 0 ||
            kv_double(rows, "size", (double)size) < 0 || kv_double(rows, "used", (double)used) < 0 ||
            kv_double(rows, "free", (double)free_) < 0 || kv_double(rows, "percent", percent) < 0)
            return -1;
        if (inodes) {
            uint64_t in_use = st.f_files > st.f_ffree ? st.f_files - st.f_ffree : 0;
            if (kv_uint(rows, "inodes", st.f_files) < 0 || kv_uint(rows, "inodes_used", in_use) < 0)
                return -1;
        }
        used_sum += (double)used;
        free_sum += (double)free_;
        count++;
    }
    *has_disk = count > 0 && used_sum + free_sum > 0;
    *disk_percent = *has_disk ? 100.0 * used_sum / (used_sum + free_sum) : 0.0;
    if (pack_key(out, "filesystems") < 0 || pack_array(out, count) < 0) return -1;
    return put(out, rows->data, rows->len);
}

/* -- disks: /sys/block/X/stat of each device Python listed ---------------------------- */

static int disks_collect(Sampler *s, Buf *out, double now, double totals[2]) {
    double seconds = isnan(s->disks_at) ? 0.0 : now - s->disks_at;
    s->disks_at = now;
    size_t count = 0;
    Buf *rows = &s->text2;
    rows->len = 0;
    totals[0] = totals[1] = 0.0;
    for (size_t i = 0; i < s->ndisks; i++) {
        Disk *d = &s->disks[i];
        Py_ssize_t n = read_whole(d->fd, &s->text);
        if (n == -2) return -1;
        if (n <= 0) { /* the device went away since it was listed */
            d->valid = 0;
            continue;
        }
        const char *p = (const char *)s->text.data + 1, *end = p + n;
        uint64_t f[7];
        for (int k = 0; k < 7; k++) {
            p = number(p, end, &f[k]);
            if (p == NULL || f[k] > (UINT64_C(1) << 53)) return unexpected("a disk's stat file");
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) p++;
        }
        double now_values[4] = {(double)(f[2] * SECTOR), (double)(f[6] * SECTOR), (double)f[0],
                                (double)f[4]};
        double rate[4] = {0.0, 0.0, 0.0, 0.0};
        if (d->valid && seconds > 0)
            for (int k = 0; k < 4; k++)
                rate[k] = now_values[k] >= d->last[k] ? (now_values[k] - d->last[k]) / seconds : 0.0;
        memcpy(d->last, now_values, sizeof now_values);
        d->valid = 1;
        if (pack_map(rows, 5) < 0 ||
            put(rows, PyBytes_AS_STRING(d->packed), (size_t)PyBytes_GET_SIZE(d->packed)) < 0 ||
            kv_double(rows, "read_bps", rate[0]) < 0 || kv_double(rows, "write_bps", rate[1]) < 0 ||
            kv_double(rows, "read_iops", rate[2]) < 0 || kv_double(rows, "write_iops", rate[3]) < 0)
            return -1;
        if (d->physical) {
            totals[0] += rate[0];
            totals[1] += rate[1];
        }
        count++;
    }
    if (pack_key(out, "disks") < 0 || pack_array(out, count) < 0) return -1;
    return put(out, rows->data, rows->len);
}

/* -- network: /proc/net/dev ------------------------------------------------------------ */

static int by_name(const void *a, const void *b) {
    const Iface *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The interfaces of /proc/net/dev but loopback, sorted by name, into s->ifaces. */
static int net_read(Sampler *s) {
    Py_ssize_t n = read_whole(s->net_dev_fd, &s->text);
    if (n == -2) return -1;
    if (n < 0) return cannot_read("/proc/net/dev");
    const char *p = (const char *)s->text.data + 1, *end = p + n;
    for (int skip = 0; skip < 2 && p < end; skip++) p = line_end(p, end) + 1;
    size_t count = 0;
    while (p < end) {
        const char *eol = line_end(p, end);
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon != NULL) {
            const char *name = p, *name_end = colon;
            while (name < name_end && (*name == ' ' || *name == '\t')) name++;
            while (name_end > name && (name_end[-1] == ' ' || name_end[-1] == '\t')) name_end--;
            size_t len = (size_t)(name_end - name);
            if (!(len == 2 && memcmp(name, "lo", 2) == 0)) {
                uint64_t f[9];
                const char *q = colon + 1;
                for (int k = 0; k < 9; k++) {
                    q = number(q, eol, &f[k]);
                    if (q == NULL) return unexpected("/proc/net/dev");
                }
                if (count == MAX_ROWS * 4) return unexpected("/proc/net/dev");
                if (count % 64 == 0) {
                    Iface *more = PyMem_Realloc(s->ifaces, (count + 64) * sizeof(Iface));
                    if (more == NULL) {
                        PyErr_NoMemory();
                        return -1;
                    }
                    s->ifaces = more;
                }
                Iface *i = &s->ifaces[count++];
                i->len = len > MAX_NAME ? MAX_NAME : len;
                memcpy(i->name, name, i->len);
                i->name[i->len] = 0;
                i->rx = (double)f[0];
                i->tx = (double)f[8];
            }
        }
        p = eol + 1;
    }
    s->nifaces = count;
    qsort(s->ifaces, count, sizeof(Iface), by_name);
    return 0;
}

/* When the set of names changed: which are physical (not under /sys/devices/virtual/net;
   all of them when none is), and each name packed for its row. NetworkCollector._classify's
   rule, asked only on a change. */
static int net_classify(Sampler *s) {
    int same = s->nknown == s->nifaces;
    for (size_t k = 0; same && k < s->nifaces; k++)
        same = s->known[k].len == s->ifaces[k].len &&
               memcmp(s->known[k].name, s->ifaces[k].name, s->ifaces[k].len) == 0;
    if (same) return 0;
    for (size_t k = 0; k < s->nknown; k++) Py_CLEAR(s->known[k].packed);
    Known *known = PyMem_Realloc(s->known, (s->nifaces ? s->nifaces : 1) * sizeof(Known));
    if (known == NULL) {
        s->nknown = 0;
        PyErr_NoMemory();
        return -1;
    }
    s->known = known;
    s->nknown = 0;
    int any = 0;
    Buf packed = {NULL, 0, 0};
    for (size_t k = 0; k < s->nifaces; k++) {
        Known *n = &known[k];
        memcpy(n->name, s->ifaces[k].name, s->ifaces[k].len + 1);
        n->len = s->ifaces[k].len;
        n->packed = NULL;
        n->physical = s->virtual_net_fd < 0 ||
                      faccessat(s->virtual_net_fd, n->name, F_OK, 0) != 0;
        any |= n->physical;
        s->nknown = k + 1;
        PyObject *text = PyUnicode_DecodeUTF8(n->name, (Py_ssize_t)n->len, "replace");
        if (text == NULL) goto fail;
        PyObject *cut = PyUnicode_Substring(text, 0, MAX_NAME);
        Py_DECREF(text);
        if (cut == NULL) goto fail;
        Py_ssize_t size;
        const char *utf8 = PyUnicode_AsUTF8AndSize(cut, &size);
        packed.len = 0;
        if (utf8 == NULL || pack_key(&packed, "iface") < 0 || pack_str(&packed, utf8, (size_t)size) < 0) {
            Py_DECREF(cut);
            goto fail;
        }
        Py_DECREF(cut);
        n->packed = PyBytes_FromStringAndSize((const char *)packed.data, (Py_ssize_t)packed.len);
        if (n->packed == NULL) goto fail;
    }
    if (!any)
        for (size_t k = 0; k < s->nknown; k++) known[k].physical = 1;
    PyMem_Free(packed.data);
    return 0;
fail:
    PyMem_Free(packed.data);
    for (size_t k = 0; k < s->nknown; k++) Py_CLEAR(known[k].packed);
    s->nknown = 0;
    return -1;
}

static int net_collect(Sampler *s, Buf *out, double now, double result[4]) {
    if (net_read(s) < 0 || net_classify(s) < 0) return -1;
    double seconds = now - s->net_at;
    s->net_at = now;
    size_t count = s->nifaces < MAX_ROWS ? s->nifaces : MAX_ROWS;
    double rx_total = 0, tx_total = 0, rx_sum = 0, tx_sum = 0, rx_moved = 0, tx_moved = 0;
    if (pack_key(out, "net") < 0 || pack_array(out, count) < 0) return -1;
    size_t j = 0; /* both lists are sorted by name: walk the previous one alongside */
    for (size_t k = 0; k < count; k++) {
        Iface *i = &s->ifaces[k];
        Iface *before = NULL;
        while (j < s->nprevious && by_name(&s->previous[j], i) < 0) j++;
        if (j < s->nprevious && by_name(&s->previous[j], i) == 0) before = &s->previous[j];
        double rx_bps = 0.0, tx_bps = 0.0;
        if (before != NULL && seconds > 0) {
            rx_bps = i->rx >= before->rx ? (i->rx - before->rx) / seconds : 0.0;
            tx_bps = i->tx >= before->tx ? (i->tx - before->tx) / seconds : 0.0;
        }
        PyObject *packed = s->known[k].packed;
        if (pack_map(out, 5) < 0 ||
            put(out, PyBytes_AS_STRING(packed), (size_t)PyBytes_GET_SIZE(packed)) < 0 ||
            kv_double(out, "rx_bps", rx_bps) < 0 || kv_double(out, "tx_bps", tx_bps) < 0 ||
            kv_double(out, "rx_bytes", i->rx) < 0 || kv_double(out, "tx_bytes", i->tx) < 0)
            return -1;
        if (s->known[k].physical) {
            rx_total += rx_bps;
            tx_total += tx_bps;
            rx_sum += i->rx;
            tx_sum += i->tx;
            if (before != NULL) {
                if (i->rx > before->rx) rx_moved += i->rx - before->rx;
                if (i->tx > before->tx) tx_moved += i->tx - before->tx;
            }
        }
    }
    /* this reading becomes the previous one */
    Iface *swap = s->previous;
    s->previous = s->ifaces;
    s->nprevious = s->nifaces;
    s->ifaces = swap;
    s->nifaces = 0;
    result[0] = rx_total;
    result[1] = tx_total;
    result[2] = rx_moved;
    result[3] = tx_moved;
    if (pack_key(out, "net_total") < 0 || pack_map(out, 4) < 0 ||
        kv_double(out, "rx_bps", rx_total) < 0 || kv_double(out, "tx_bps", tx_total) < 0 ||
        kv_double(out, "rx_bytes", rx_sum) < 0 || kv_double(out, "tx_bytes", tx_sum) < 0)
        return -1;
    return 0;
}

/* -- connections: /proc/net/sockstat and sockstat6 ------------------------------------- */

static int connections_collect(Sampler *s, Buf *out, uint64_t counts[2]) {
    Py_ssize_t n = read_whole(s->sockstat_fd, &s->text);
    if (n == -2) return -1;
    if (n < 0) return cannot_read("/proc/net/sockstat");
    /* sockstat6 goes after sockstat, as ConnectionsCollector concatenates them */
    Py_ssize_t n6 = s->sockstat6_fd < 0 ? -1 : read_whole(s->sockstat6_fd, &s->text2);
    if (n6 == -2) return -1;
    if (n6 > 0 && put(&s->text, s->text2.data + 1, (size_t)n6 + 1) < 0) return -1;
    if (n6 > 0) s->text.len--; /* the copied NUL is not content */
    const char *text = (const char *)s->text.data, *end = text + s->text.len;
    static const struct { const char *needle; int which; } NEEDLES[] = {
        {"\nTCP: inuse ", 0}, {"\nTCP6: inuse ", 0}, {" tw ", 0}, {"\nUDP: inuse ", 1},
        {"\nUDP6: inuse ", 1}};
    counts[0] = counts[1] = 0;
    for (size_t i = 0; i < sizeof NEEDLES / sizeof NEEDLES[0]; i++) {
        const char *at = strstr(text, NEEDLES[i].needle);
        if (at == NULL) continue;
        uint64_t value;
        if (number(at + strlen(NEEDLES[i].needle), end, &value) == NULL ||
            value > (UINT64_C(1) << 40))
            return unexpected("/proc/net/sockstat");
        counts[NEEDLES[i].which] += value;
    }
    if (pack_key(out, "connections") < 0 || pack_map(out, 2) < 0 ||
        kv_uint(out, "tcp", counts[0]) < 0 || kv_uint(out, "udp", counts[1]) < 0)
        return -1;
    return 0;
}

/* -- temperatures: each sensor file Python found ---------------------------------------- */

/* Millidegrees as int() reads them (whitespace around, an optional sign right before the
   digits), then TemperatureCollector's range check. 0: not a reading. */
static int celsius(const char *p, const char *end, double *out) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) p++;
    int negative = 0;
    if (p < end && (*p == '-' || *p == '+')) negative = *p++ == '-';
    uint64_t value = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 15) value = value * 10 + (uint64_t)(*p++ - '0');
    if (p == digits) return 0;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) p++;
    if (p != end) return 0; /* more digits than a sensor has, or not a number */
    double c = (negative ? -(double)value : (double)value) / 1000.0;
    if (!(c >= -273.15 && c <= 1000)) return 0;
    *out = c;
    return 1;
}

static int temperatures_collect(Sampler *s, Buf *out, double *hottest, int *has_hottest) {
    Buf *rows = &s->text2;
    rows->len = 0;
    size_t count = 0;
    *has_hottest = 0;
    for (size_t i = 0; i < s->nsensors; i++) {
        Py_ssize_t n = read_whole(s->sensors[i].fd, &s->text);
        if (n == -2) return -1;
        double value;
        if (n <= 0 || !celsius((const char *)s->text.data + 1, (const char *)s->text.data + 1 + n, &value))
            continue; /* some sensors answer EIO or garbage while idle */
        PyObject *packed = s->sensors[i].packed;
        if (pack_map(rows, 2) < 0 ||
            put(rows, PyBytes_AS_STRING(packed), (size_t)PyBytes_GET_SIZE(packed)) < 0 ||
            kv_double(rows, "celsius", value) < 0)
            return -1;
        if (!*has_hottest || value > *hottest) *hottest = value;
        *has_hottest = 1;
        count++;
    }
    if (pack_key(out, "temperatures") < 0 || pack_array(out, count) < 0) return -1;
    return put(out, rows->data, rows->len);
}

/* ---- the Python type ---------------------------------------------------------------- */

static void clear_disks(Sampler *s) {
    for (size_t i = 0; i < s->ndisks; i++) {
        Py_CLEAR(s->disks[i].key);
        Py_CLEAR(s->disks[i].packed);
    }
    PyMem_Free(s->disks);
    s->disks = NULL;
    s->ndisks = 0;
}

static void clear_filesystems(Sampler *s) {
    for (size_t i = 0; i < s->nfilesystems; i++) {
        Py_CLEAR(s->filesystems[i].packed);
        Py_CLEAR(s->filesystems[i].path);
    }
    PyMem_Free(s->filesystems);
    s->filesystems = NULL;
    s->nfilesystems = 0;
}

static void clear_sensors(Sampler *s) {
    for (size_t i = 0; i < s->nsensors; i++) Py_CLEAR(s->sensors[i].packed);
    PyMem_Free(s->sensors);
    s->sensors = NULL;
    s->nsensors = 0;
}

static void Sampler_dealloc(Sampler *s) {
    clear_disks(s);
    clear_filesystems(s);
    clear_sensors(s);
    for (size_t k = 0; k < s->nknown; k++) Py_CLEAR(s->known[k].packed);
    PyMem_Free(s->known);
    PyMem_Free(s->cpus);
    PyMem_Free(s->ifaces);
    PyMem_Free(s->previous);
    PyMem_Free(s->text.data);
    PyMem_Free(s->text2.data);
    PyMem_Free(s->out.data);
    Py_CLEAR(s->names);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int Sampler_init(Sampler *s, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"stat", "loadavg", "meminfo", "net_dev", "sockstat", "sockstat6",
                            "virtual_net", "proc", "boot", "now", "names", NULL};
    PyObject *summary_names;
    double now;
    if (s->ready) {
        PyErr_SetString(PyExc_RuntimeError, "a Sampler is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iiiiiiiiddO!:Sampler", names, &s->stat_fd,
                                     &s->loadavg_fd, &s->meminfo_fd, &s->net_dev_fd,
                                     &s->sockstat_fd, &s->sockstat6_fd, &s->virtual_net_fd,
                                     &s->proc_fd, &s->boot, &now, &PyTuple_Type, &summary_names))
        return -1;
    if (PyTuple_GET_SIZE(summary_names) != NAMES) {
        PyErr_Format(PyExc_ValueError, "%d summary names expected", NAMES);
        return -1;
    }
    s->names = Py_NewRef(summary_names);
    s->net_at = now;
    s->disks_at = NAN;
    s->next_key = sizeof s->keys;
    /* the first readings, so that the first sample already has real rates */
    double total;
    if (cpu_collect(s, &s->out, &total, 0) < 0 || net_read(s) < 0 || net_classify(s) < 0)
        return -1;
    Iface *swap = s->previous;
    s->previous = s->ifaces;
    s->nprevious = s->nifaces;
    s->ifaces = swap;
    s->nifaces = 0;
    s->ready = 1;
    return 0;
}

/* set_disks([(name: bytes, packed: bytes, fd: int, physical: bool), ...], first: float | None)
   A device listed before keeps its last reading, as DiskIOCollector's counters outlive a
   relist. ``first``: the monotonic time to take the first readings at (at start). */
static PyObject *Sampler_set_disks(Sampler *s, PyObject *args) {
    PyObject *list, *first;
    if (!s->ready) return PyErr_Format(PyExc_RuntimeError, "Sampler.__init__ has not run");
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &list, &first)) return NULL;
    double now = first == Py_None ? 0.0 : PyFloat_AsDouble(first);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_ROWS) return PyErr_Format(PyExc_ValueError, "more than %d disks", MAX_ROWS);
    Disk *disks = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Disk));
    if (disks == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        Disk *d = &disks[i];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "O!O!ip", &PyBytes_Type, &d->key,
                              &PyBytes_Type, &d->packed, &d->fd, &d->physical)) {
            for (Py_ssize_t k = 0; k < i; k++) {
                Py_DECREF(disks[k].key);
                Py_DECREF(disks[k].packed);
            }
            PyMem_Free(disks);
            return NULL;
        }
        Py_INCREF(d->key);
        Py_INCREF(d->packed);
        for (size_t k = 0; k < s->ndisks; k++) /* a device listed before keeps its reading */
            if (s->disks[k].valid && PyObject_RichCompareBool(s->disks[k].key, d->key, Py_EQ) == 1) {
                d->valid = 1;
                memcpy(d->last, s->disks[k].last, sizeof d->last);
            }
    }
    clear_disks(s);
    s->disks = disks;
    s->ndisks = (size_t)n;
    if (first == Py_None) Py_RETURN_NONE;
    Buf scratch = {NULL, 0, 0};
    double totals[2];
    int failed = disks_collect(s, &scratch, now, totals);
    PyMem_Free(scratch.data);
    if (failed < 0) return NULL;
    Py_RETURN_NONE;
}

/* set_filesystems([(packed: bytes, path: bytes), ...]) */
static PyObject *Sampler_set_filesystems(Sampler *s, PyObject *list) {
    if (!PyList_Check(list)) return PyErr_Format(PyExc_TypeError, "a list of (packed, path)");
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_ROWS) return PyErr_Format(PyExc_ValueError, "more than %d filesystems", MAX_ROWS);
    Filesystem *fs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Filesystem));
    if (fs == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "O!O!", &PyBytes_Type, &fs[i].packed,
                              &PyBytes_Type, &fs[i].path) ||
            (Py_ssize_t)strlen(PyBytes_AS_STRING(fs[i].path)) != PyBytes_GET_SIZE(fs[i].path)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a path with a NUL byte");
            for (Py_ssize_t k = 0; k < i; k++) {
                Py_DECREF(fs[k].packed);
                Py_DECREF(fs[k].path);
            }
            PyMem_Free(fs);
            return NULL;
        }
        Py_INCREF(fs[i].packed);
        Py_INCREF(fs[i].path);
    }
    clear_filesystems(s);
    s->filesystems = fs;
    s->nfilesystems = (size_t)n;
    Py_RETURN_NONE;
}

/* set_sensors([(packed: bytes, fd: int), ...]) */
static PyObject *Sampler_set_sensors(Sampler *s, PyObject *list) {
    if (!PyList_Check(list)) return PyErr_Format(PyExc_TypeError, "a list of (packed, fd)");
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > 256) return PyErr_Format(PyExc_ValueError, "more than 256 sensors");
    Sensor *sensors = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Sensor));
    if (sensors == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "O!i", &PyBytes_Type, &sensors[i].packed,
                              &sensors[i].fd)) {
            for (Py_ssize_t k = 0; k < i; k++) Py_DECREF(sensors[k].packed);
            PyMem_Free(sensors);
            return NULL;
        }
        Py_INCREF(sensors[i].packed);
    }
    clear_sensors(s);
    s->sensors = sensors;
    s->nsensors = (size_t)n;
    Py_RETURN_NONE;
}

/* -- the minute summary ------------------------------------------------------------- */

/* Python's float floor division (float_floor_div in CPython's floatobject.c), so that a
   sample falls in the same minute here as in summary.MinuteAggregator. */
static double floor_div(double vx, double wx) {
    double mod = fmod(vx, wx), div = (vx - mod) / wx;
    if (mod && ((wx < 0) != (mod < 0))) div -= 1.0;
    if (!div) return copysign(0.0, vx / wx);
    double floored = floor(div);
    return div - floored > 0.5 ? floored + 1.0 : floored;
}

static double clamp(double value) { /* max(-LIMIT, min(LIMIT, value)), NaN included */
    double m = value < LIMIT ? value : LIMIT;
    return m > -LIMIT ? m : -LIMIT;
}

static PyObject *triple(double a, double b, double c) {
    return Py_BuildValue("[ddd]", clamp(a), clamp(b), clamp(c));
}

/* The current minute's summary body, or None; starts empty (MinuteAggregator.flush). */
static PyObject *minute_flush(Sampler *s) {
    if (!s->in_minute || s->minute_samples == 0) {
        s->in_minute = 0;
        Py_RETURN_NONE;
    }
    PyObject *values = PyDict_New();
    if (values == NULL) return NULL;
    for (int i = 0; i < NAMES; i++) {
        if (s->count[i] == 0) continue;
        PyObject *v = triple(s->sum[i] / (double)s->count[i], s->low[i], s->high[i]);
        if (v == NULL || PyDict_SetItem(values, PyTuple_GET_ITEM(s->names, i), v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(values);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *body = Py_BuildValue(
        "{sLsKsNsdsd}", "minute", (long long)s->minute, "samples",
        (unsigned long long)(s->minute_samples < 3600 ? s->minute_samples : 3600), "values",
        values, "net_rx_bytes", s->rx_moved, "net_tx_bytes", s->tx_moved);
    if (body == NULL) return NULL;
    s->in_minute = 0;
    s->minute_samples = s->minute_rows = 0;
    memset(s->count, 0, sizeof s->count);
    s->rx_moved = s->tx_moved = 0.0;
    return body;
}

/* Folds one sample's row in; returns the finished minute's summary when this sample
   starts another minute, else None. */
static PyObject *minute_add(Sampler *s, double ts, const double row[NAMES],
                            const int present[NAMES], double rx, double tx) {
    int64_t minute = (int64_t)floor_div(ts, 60.0) * 60;
    PyObject *done;
    if (s->in_minute && minute != s->minute) {
        done = minute_flush(s);
        if (done == NULL) return NULL;
    } else {
        done = Py_NewRef(Py_None);
    }
    s->in_minute = 1;
    s->minute = minute;
    s->minute_samples++;
    if (s->minute_rows < MAX_MINUTE_ROWS) {
        s->minute_rows++;
        for (int i = 0; i < NAMES; i++) {
            if (!present[i]) continue;
            double v = row[i];
            if (s->count[i] == 0) {
                s->sum[i] = 0.0;
                s->low[i] = s->high[i] = v;
            } else {
                if (v < s->low[i]) s->low[i] = v;   /* min(): the first of equals stays */
                if (v > s->high[i]) s->high[i] = v;
            }
            s->sum[i] += v; /* in sample order, as the Python sum is taken */
            s->count[i]++;
        }
    }
    s->rx_moved += rx;
    s->tx_moved += tx;
    return done;
}

static PyObject *Sampler_flush(Sampler *s, PyObject *unused) {
    (void)unused;
    return minute_flush(s);
}

/* set_process_offset(offset: int | None): None while the processes are counted by listing */
static PyObject *Sampler_set_process_offset(Sampler *s, PyObject *offset) {
    if (offset == Py_None) {
        s->has_offset = 0;
        Py_RETURN_NONE;
    }
    long long value = PyLong_AsLongLong(offset);
    if (value == -1 && PyErr_Occurred()) return NULL;
    s->offset = value;
    s->has_offset = 1;
    Py_RETURN_NONE;
}

/* A fresh masking key: unpredictable, as RFC 6455 §5.3 asks. */
static const unsigned char *masking_key(Sampler *s) {
    if (s->next_key >= sizeof s->keys) {
        if (getrandom(s->keys, sizeof s->keys, 0) != (ssize_t)sizeof s->keys) {
            cannot_read("the kernel's random numbers");
            return NULL;
        }
        s->next_key = 0;
    }
    s->next_key += 4;
    return s->keys + s->next_key - 4;
}

/* sample(ts, now, listed, framed) -> (frame, summary). ``ts``: the wall clock, or None
   to read it here (as time.time() does). ``listed``: the process count where
   it is counted by listing /proc, else -1 (from /proc's link count). ``framed``: true for
   a masked WebSocket frame ready to send, false for the bare msgpack. ``summary``: the
   minute that this sample closed, or None. */
static PyObject *Sampler_sample(Sampler *s, PyObject *const *args, Py_ssize_t nargs) {
    if (!s->ready) return PyErr_Format(PyExc_RuntimeError, "Sampler.__init__ has not run");
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "sample(ts, now, listed, framed)");
    double ts, now = PyFloat_AsDouble(args[1]);
    if (args[0] == Py_None) { /* time.time(), one Python call fewer */
        struct timespec wall;
        if (clock_gettime(CLOCK_REALTIME, &wall) != 0) return PyErr_SetFromErrno(PyExc_OSError);
        ts = (double)((int64_t)wall.tv_sec * 1000000000 + wall.tv_nsec) / 1e9;
    } else {
        ts = PyFloat_AsDouble(args[0]);
    }
    long long listed = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    int framed = PyObject_IsTrue(args[3]);
    if (framed < 0) return NULL;
    uint64_t processes;
    if (listed >= 0) {
        processes = (uint64_t)listed;
    } else {
        struct stat st;
        if (!s->has_offset) return PyErr_Format(PyExc_ValueError, "no process offset set");
        if (fstat(s->proc_fd, &st) != 0) {
            cannot_read("/proc");
            return NULL;
        }
        int64_t count = (int64_t)st.st_nlink - s->offset;
        processes = count > 0 ? (uint64_t)count : 0;
    }
    double uptime = ts - s->boot > 0.0 ? ts - s->boot : 0.0;
    Buf *out = &s->out;
    out->len = 0;
    double cpu, load[3], mem_used, mem_percent, swap_used, disk_percent, disk_io[2], net[4],
        hottest = 0.0;
    int has_disk, has_hottest;
    uint64_t connections[2];
    if (pack_map(out, 2) < 0 || pack_key(out, "t") < 0 || pack_key(out, "sample") < 0 ||
        pack_key(out, "b") < 0 || pack_map(out, 2) < 0 || kv_double(out, "ts", ts) < 0 ||
        pack_key(out, "metrics") < 0 || pack_map(out, 13) < 0 ||
        cpu_collect(s, out, &cpu, 1) < 0 || load_collect(s, out, load) < 0 ||
        memory_collect(s, out, &mem_used, &mem_percent, &swap_used) < 0 ||
        filesystems_collect(s, out, &disk_percent, &has_disk) < 0 ||
        disks_collect(s, out, now, disk_io) < 0 || net_collect(s, out, now, net) < 0 ||
        connections_collect(s, out, connections) < 0 || kv_uint(out, "processes", processes) < 0 ||
        kv_double(out, "uptime", uptime) < 0 ||
        temperatures_collect(s, out, &hottest, &has_hottest) < 0)
        return NULL;
    /* sampling.row's values, in SUMMARY_NAMES order */
    const double row[NAMES] = {cpu, load[0], load[1], load[2], mem_used, mem_percent, swap_used,
                               disk_percent, disk_io[0], disk_io[1], net[0], net[1],
                               (double)connections[0], (double)connections[1],
                               (double)processes, hottest, 0.0, 0.0};
    const int present[NAMES] = {1, 1, 1, 1, 1, 1, 1, has_disk, 1, 1, 1, 1, 1, 1, 1,
                                has_hottest, 0, 0};
    PyObject *frame;
    if (!framed) {
        frame = PyBytes_FromStringAndSize((const char *)out->data, (Py_ssize_t)out->len);
    } else {
        const unsigned char *key = masking_key(s);
        if (key == NULL) return NULL;
        frame = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)frame_size(out->len));
        if (frame != NULL)
            frame_write((unsigned char *)PyBytes_AS_STRING(frame), 0x82, out->data, out->len,
                        key);
    }
    if (frame == NULL) return NULL;
    PyObject *done = minute_add(s, ts, row, present, net[2], net[3]);
    if (done == NULL) {
        Py_DECREF(frame);
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, frame, done);
    Py_DECREF(frame);
    Py_DECREF(done);
    return result;
}

static PyMethodDef Sampler_methods[] = {
    {"sample", (PyCFunction)(void (*)(void))Sampler_sample, METH_FASTCALL,
     "sample(ts|None, now, listed, framed) -> (frame, summary of the minute it closed or None)"},
    {"flush", (PyCFunction)Sampler_flush, METH_NOARGS,
     "flush() -> the current, possibly partial, minute's summary or None; starts empty"},
    {"set_process_offset", (PyCFunction)Sampler_set_process_offset, METH_O,
     "set_process_offset(offset): /proc's link count minus the process count, or None"},
    {"set_disks", (PyCFunction)Sampler_set_disks, METH_VARARGS,
     "set_disks([(name, packed, fd, physical), ...], first): the devices to read"},
    {"set_filesystems", (PyCFunction)Sampler_set_filesystems, METH_O,
     "set_filesystems([(packed, path), ...]): the mounts to statvfs"},
    {"set_sensors", (PyCFunction)Sampler_set_sensors, METH_O,
     "set_sensors([(packed, fd), ...]): the temperature files to read"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SamplerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "beeyard.agent.collectors._native.Sampler",
    .tp_basicsize = sizeof(Sampler),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The per-second sample over file descriptors the caller keeps open.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sampler_init,
    .tp_dealloc = (destructor)Sampler_dealloc,
    .tp_methods = Sampler_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                                    "The agent's per-second sample in C.", -1, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&SamplerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Sampler", (PyObject *)&SamplerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
