// SHA-256 (FIPS 180-4) of a buffer, for naming a plugin file by its content as sha256sum does.
#ifndef L4LB_SHA256_H
#define L4LB_SHA256_H

#include <stddef.h>
#include <stdint.h>

// Writes the 32-byte digest of `length` bytes at `bytes` to `digest`.
void l4lb_sha256(const uint8_t *bytes, size_t length, uint8_t digest[32]);

#endif
