/*
 * source-hash: an example l4lb policy plugin in plain C.
 *
 * Sends each client address to the same backend while the pool stays the same (session affinity
 * without state), by rendezvous hashing: every healthy backend gets a score hash(client, backend)
 * times its weight, and the highest score wins. Removing a backend moves only its own clients, and a
 * retired backend is skipped for the next-best one.
 *
 * Build outside this repository with nothing but the header:
 *     cc -shared -fPIC -O2 -I path/to/include -o source-hash.so source_hash.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l4lb_policy.h"

/* No state: the hash is a pure function of the client and the backend. The instance pointer only
 * has to be non-NULL. */
static int instance_marker;

/* l4lb's services (ABI 1.1), kept from the entry point; NULL under an l4lb that speaks ABI 1.0. */
static const l4lb_host *host;

static void log_line(int32_t level, const char *message) {
    if (host != NULL && host->log != NULL) host->log(host, level, message, strlen(message));
}

static uint64_t mix(uint64_t hash, const void *data, size_t length) {
    const uint8_t *bytes = data;
    for (size_t i = 0; i < length; i++) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ULL; /* FNV-1a */
    }
    return hash;
}

static uint64_t finalize(uint64_t hash) {
    /* splitmix64's finalizer: spreads FNV's low-entropy high bits. */
    hash ^= hash >> 30;
    hash *= 0xbf58476d1ce4e5b9ULL;
    hash ^= hash >> 27;
    hash *= 0x94d049bb133111ebULL;
    return hash ^ (hash >> 31);
}

static void *source_hash_new(const char *config, size_t config_length, char *error, size_t error_capacity) {
    (void)config;
    /* Takes no configuration; an empty object is fine. */
    for (size_t i = 0; i < config_length; i++) {
        char c = config[i];
        if (c != '{' && c != '}' && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            if (error_capacity > 0) {
                strncpy(error, "source-hash takes no configuration", error_capacity - 1);
                error[error_capacity - 1] = '\0';
            }
            return NULL;
        }
    }
    log_line(L4LB_LOG_INFO, "instance created: clients hashed to backends by rendezvous on their address");
    return &instance_marker;
}

static void source_hash_destroy(void *instance) {
    (void)instance;
}

static int64_t source_hash_pick(void *instance, const l4lb_address *client, const l4lb_backend *backends,
                                size_t count) {
    (void)instance;
    size_t address_length = client->family == L4LB_FAMILY_IPV4 ? 4 : 16;
    uint64_t client_hash = mix(0xcbf29ce484222325ULL, client->bytes, address_length);
    int64_t best = L4LB_PICK_NONE;
    double best_score = -1.0;
    for (size_t i = 0; i < count; i++) {
        if (!backends[i].healthy) continue;
        uint64_t hash = finalize(mix(client_hash, backends[i].name.data, backends[i].name.length));
        /* Weighted rendezvous: -w / ln(u) with u uniform in (0, 1). */
        double u = ((double)(hash >> 11) + 0.5) / 9007199254740992.0;
        double score = -(double)backends[i].weight / __builtin_log(u);
        if (score > best_score) {
            best_score = score;
            best = (int64_t)i;
        }
    }
    return best;
}

/* ABI 1.2: the same computation as pick, told as steps. Pure, like pick, so explaining changes
 * nothing. */
static int64_t source_hash_explain(void *instance, const l4lb_address *client, const l4lb_backend *backends,
                                   size_t count, char *text, size_t capacity, size_t *length) {
    int64_t best = source_hash_pick(instance, client, backends, count);
    size_t healthy = 0;
    for (size_t i = 0; i < count; i++) healthy += backends[i].healthy ? 1 : 0;
    int written;
    if (best == L4LB_PICK_NONE) {
        written = snprintf(text, capacity, "rendezvous hash of the client address\nno healthy backend of %zu", count);
    } else {
        written = snprintf(text, capacity,
                           "rendezvous hash of the client address over %zu healthy of %zu, by weight\n"
                           "highest score: %.*s (weight %u)",
                           healthy, count, (int)backends[best].name.length, backends[best].name.data,
                           backends[best].weight);
    }
    /* snprintf answers the length it wanted; what it wrote is at most capacity - 1. */
    *length = written < 0 ? 0 : ((size_t)written < capacity ? (size_t)written : (capacity > 0 ? capacity - 1 : 0));
    return best;
}

int l4lb_policy_entry(l4lb_policy_descriptor *descriptor, size_t descriptor_size) {
    /* Everything but the host's log (1.1) and explain (1.2) is ABI 1.0: load into any 1.x l4lb. */
    if (descriptor_size < L4LB_POLICY_DESCRIPTOR_SIZE_1_0) return 1;
    if (L4LB_POLICY_HAS_HOST(descriptor_size)) host = descriptor->host;
    descriptor->abi_major = L4LB_POLICY_ABI_MAJOR;
    descriptor->abi_minor = L4LB_POLICY_ABI_MINOR;
    descriptor->struct_size = sizeof(l4lb_policy_descriptor);
    descriptor->name = "source-hash";
    descriptor->instance_new = source_hash_new;
    descriptor->instance_destroy = source_hash_destroy;
    descriptor->pick = source_hash_pick;
    /* Only a 1.2 host's descriptor has room for explain. */
    if (L4LB_POLICY_HAS_EXPLAIN(descriptor_size)) descriptor->explain = source_hash_explain;
    return 0;
}
