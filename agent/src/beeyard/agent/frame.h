/* One masked WebSocket client frame (RFC 6455 §5.2, §5.3), for _frame.c and the sampler
   (collectors/_native.c), which frames its live sample itself. */
#ifndef BEEYARD_FRAME_H
#define BEEYARD_FRAME_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The frame's length for a payload of ``n`` bytes. */
static inline size_t frame_size(size_t n) { return (n < 126 ? 2 : n < 65536 ? 4 : 10) + 4 + n; }

/* Writes the frame into ``dst`` (frame_size(n) bytes): header, ``key``, masked payload.
   ``first``: the first header byte (FIN and opcode). */
static inline void frame_write(unsigned char *dst, unsigned char first, const unsigned char *src,
                               size_t n, const unsigned char key[4]) {
    size_t head = n < 126 ? 2 : n < 65536 ? 4 : 10;
    dst[0] = first;
    if (n < 126) {
        dst[1] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        dst[1] = 0x80 | 126;
        dst[2] = (unsigned char)(n >> 8);
        dst[3] = (unsigned char)n;
    } else {
        dst[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) dst[2 + i] = (unsigned char)((uint64_t)n >> (8 * (7 - i)));
    }
    memcpy(dst + head, key, 4);
    dst += head + 4;
    /* eight bytes at a time with the key repeated twice, then the tail byte by byte */
    unsigned char twice[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t wide;
    memcpy(&wide, twice, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, src + i, 8);
        chunk ^= wide;
        memcpy(dst + i, &chunk, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}
#endif
