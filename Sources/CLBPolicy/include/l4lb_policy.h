/*
 * l4lb_policy.h - the C ABI of l4lb's load-balancing policy plugins.
 *
 * A plugin is a shared library that exports one function, l4lb_policy_entry, which fills a
 * descriptor: the ABI version it was built against, its name, and its function table. l4lb loads
 * plugins with dlopen from its plugin directories, refuses any whose ABI major differs from its own,
 * and never unloads them (no dlclose) while it runs.
 *
 * Only <stdint.h>, <stddef.h> and <stdbool.h>; every name starts with l4lb_ (types and host
 * constants), l4lb_policy_ (what a plugin implements) or L4LB_ (macros).
 *
 * ABI history: 1.0 the descriptor up to connection_closed; 1.1 adds l4lb_host (a log for plugins),
 * passed in the descriptor's `host` field; 1.2 adds `explain` (why a client would go where it goes);
 * 1.3 adds `pick_pool` (a pick that reads the live state of the backends it considers, instead of
 * being handed a fresh copy of the whole pool).
 *
 * Threads: l4lb calls instance_new, instance_destroy and pool_changed from its control thread, never
 * concurrently with each other for one instance. It calls pick, connection_opened and
 * connection_closed concurrently from every event-loop thread, possibly at the same time as
 * pool_changed: they must be thread-safe and must not block (no I/O, no waiting on a lock that a
 * slow path holds), because the thread that calls them is relaying other clients' bytes.
 *
 * Strings and buffers cross as pointer + length and are not NUL-terminated unless stated.
 */
#ifndef L4LB_POLICY_H
#define L4LB_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. A plugin built against another major version is refused; a higher
 * minor version only adds fields at the end of the descriptor, which struct_size tells apart. */
#define L4LB_POLICY_ABI_MAJOR 1
#define L4LB_POLICY_ABI_MINOR 3

/* The symbol every plugin exports. */
#define L4LB_POLICY_ENTRY_SYMBOL "l4lb_policy_entry"

/* pick's answer when no backend should serve the client. */
#define L4LB_PICK_NONE (-1)

/* Address families of l4lb_address.family. */
#define L4LB_FAMILY_UNSPEC 0
#define L4LB_FAMILY_IPV4 4
#define L4LB_FAMILY_IPV6 6

/* Levels of l4lb_host.log. */
#define L4LB_LOG_DEBUG 0
#define L4LB_LOG_INFO 1
#define L4LB_LOG_WARNING 2
#define L4LB_LOG_ERROR 3

/* What l4lb offers a plugin (ABI 1.1). l4lb owns it; it stays valid for the life of the process, so
 * a plugin may keep the pointer it was given at entry and use it from any thread. */
typedef struct l4lb_host l4lb_host;
struct l4lb_host {
    /* sizeof(l4lb_host) as l4lb was built; later minor versions only add fields at the end. */
    uint32_t struct_size;

    /* Writes `message` (`length` bytes of UTF-8, not NUL-terminated; cut at the first newline and at
     * 1024 bytes) as one line of l4lb's log at `level` (L4LB_LOG_*), tagged with the plugin's name,
     * in the operator's log format and destination. l4lb keeps at most 20 lines per second per
     * plugin and counts the rest. Any thread; it may wait briefly for the log's output, so log
     * events (a file reloaded, a bad input), never every pick. Pass the `host` pointer itself. */
    void (*log)(const l4lb_host *host, int32_t level, const char *message, size_t length);

    /* l4lb's own; a plugin does not touch it. */
    void *context;
};

/* A borrowed string: `data` points to `length` bytes of UTF-8, owned by l4lb, valid only for the
 * duration of the call that passes it. Not NUL-terminated. length 0 means absent. */
typedef struct l4lb_string {
    const char *data;
    size_t length;
} l4lb_string;

/* An IP endpoint. For IPv4 the first 4 bytes of `bytes` hold the address in network order; for IPv6
 * all 16 do. The client of an IPv4-mapped IPv6 connection (::ffff:a.b.c.d) is given as IPv6;
 * plugins that care convert it. */
typedef struct l4lb_address {
    uint8_t family;   /* L4LB_FAMILY_* */
    uint8_t bytes[16];
    uint16_t port;    /* host byte order */
} l4lb_address;

/* One backend of the pool, as pick and pool_changed see it. The array and everything it points to
 * are owned by l4lb and valid only during the call. */
typedef struct l4lb_backend {
    l4lb_string name;            /* "host:port" as the operator wrote it */
    l4lb_address address;        /* the resolved address l4lb connects to */
    uint32_t weight;             /* 1-256 */
    l4lb_string region;          /* the backend's region attribute; length 0 when it has none */
    uint64_t active_connections; /* open or connecting connections now (a snapshot) */
    bool healthy;                /* false: retired, or already failed for this client; do not pick */
} l4lb_backend;

/* The pool during one pick (ABI 1.3), for pick_pool. l4lb owns it; valid only during that call.
 *
 * `backends` is the very array pool_changed was given for this pool, at the same address, and its
 * names, addresses, weights and regions do not change. So a plugin may key what it built in
 * pool_changed by that pointer: while a pick runs on a pool its array is alive, and l4lb hands every
 * pool to pool_changed before any pick sees it, so an equal pointer is the same pool. (A pick may
 * still run on the pool before the last one announced: compare, do not assume.) The array's
 * active_connections and healthy fields are as of pool_changed; read the live values with the two
 * functions, for the backends the pick considers, and with no cost for the others. */
typedef struct l4lb_pool l4lb_pool;
struct l4lb_pool {
    /* sizeof(l4lb_pool) as l4lb was built; later minor versions only add fields at the end. */
    uint32_t struct_size;
    const l4lb_backend *backends;
    size_t count;
    /* Open or connecting connections to backends[index] now; 0 for an index out of range. */
    uint64_t (*active_connections)(const l4lb_pool *pool, size_t index);
    /* Whether pick may answer `index` for this client now: in range, not retired and not already
     * failed for this client (the live value of `healthy`). */
    bool (*healthy)(const l4lb_pool *pool, size_t index);
    /* l4lb's own; a plugin does not touch it. */
    const void *context;
};

/* The function table a plugin fills. `instance` is the plugin's own pointer, returned by
 * instance_new and passed back to every other function. */
typedef struct l4lb_policy_descriptor {
    /* Set by the plugin to L4LB_POLICY_ABI_MAJOR / _MINOR and sizeof(l4lb_policy_descriptor) as it
     * was compiled. */
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size;

    /* The name operators use in --policy and setPolicy: NUL-terminated, [A-Za-z0-9._-]+, static
     * (valid for the life of the process). */
    const char *name;

    /* Creates an instance from `config` (a JSON object as text, `config_length` bytes, not
     * NUL-terminated; length 0 when the operator gave none). On failure returns NULL and writes a
     * NUL-terminated one-line reason of at most `error_capacity` bytes into `error`, which l4lb
     * owns. Called on the control thread; may block (open files, ...). Required. */
    void *(*instance_new)(const char *config, size_t config_length, char *error, size_t error_capacity);

    /* Destroys an instance once l4lb no longer calls it (after a policy switch, when no pick can be
     * running on it). Required. */
    void (*instance_destroy)(void *instance);

    /* Picks the backend for a client: an index into `backends` whose `healthy` is true, or
     * L4LB_PICK_NONE. Any other answer is a fault: l4lb counts it, logs it (rate-limited) and
     * serves that client with its built-in round-robin. Called concurrently from every relay thread;
     * must not block. Required. */
    int64_t (*pick)(void *instance, const l4lb_address *client, const l4lb_backend *backends, size_t count);

    /* Told the new pool whenever it changes, before any pick sees it, so that tables can be rebuilt
     * off the hot path. Control thread. Optional (NULL). */
    void (*pool_changed)(void *instance, const l4lb_backend *backends, size_t count);

    /* Told when a connection to `backend` (a snapshot of the pool entry) opens and closes. Event-loop
     * threads, concurrently; must not block. Optional (NULL). */
    void (*connection_opened)(void *instance, const l4lb_backend *backend);
    void (*connection_closed)(void *instance, const l4lb_backend *backend);

    /* ABI 1.1. Written by l4lb before it calls the entry point, read by the plugin (which must not
     * clear it): l4lb's services for this plugin. Only present when the entry point's
     * descriptor_size covers it (L4LB_POLICY_HAS_HOST); an l4lb that speaks ABI 1.0 passes a smaller
     * descriptor, and the plugin then has no log (stderr is the fallback). */
    const l4lb_host *host;

    /* ABI 1.2. Says which backend pick would answer for `client` now, and why, for an operator
     * (l4lb's /explain and `l4lb ctl explain`). Writes the reasons as UTF-8 steps separated by '\n'
     * (for example "country FR" and "region eu-west: 2 healthy of 3") into `text`, at most `capacity`
     * bytes, which l4lb owns; stores the number of bytes written in *length. Returns the index pick
     * would answer, or L4LB_PICK_NONE. Must change nothing: explaining twice, or explaining and then
     * picking, gives the same answers as not explaining (a rotation is not advanced). Called off the
     * hot path, from any thread, concurrently with pick. Optional (NULL): the plugin then has no
     * explanation. A plugin sets it only when the entry point's descriptor_size covers it
     * (L4LB_POLICY_HAS_EXPLAIN); l4lb reads it only when the plugin's struct_size does. */
    int64_t (*explain)(void *instance, const l4lb_address *client, const l4lb_backend *backends, size_t count,
                       char *text, size_t capacity, size_t *length);

    /* ABI 1.3. The same answer as pick, for the same client and pool, but l4lb passes the pool as an
     * l4lb_pool: no copy of every backend per pick, so a pick that considers a few backends of a
     * large pool costs what those few cost. When set, l4lb calls it instead of pick (which must
     * still be set, for an l4lb of ABI 1.2 or older). Same threads and rules as pick. Optional
     * (NULL). A plugin sets it only when the entry point's descriptor_size covers it
     * (L4LB_POLICY_HAS_PICK_POOL); l4lb reads it only when the plugin's struct_size does. */
    int64_t (*pick_pool)(void *instance, const l4lb_address *client, const l4lb_pool *pool);
} l4lb_policy_descriptor;

/* The descriptor's size in ABI 1.0. A plugin accepts a descriptor_size of at least this (not
 * sizeof(l4lb_policy_descriptor)), so that it also loads into an l4lb that speaks ABI 1.0. */
#define L4LB_POLICY_DESCRIPTOR_SIZE_1_0 offsetof(l4lb_policy_descriptor, host)

/* True when a descriptor of `descriptor_size` bytes, as passed to the entry point, holds `host`. */
#define L4LB_POLICY_HAS_HOST(descriptor_size) \
    ((descriptor_size) >= offsetof(l4lb_policy_descriptor, host) + sizeof(const l4lb_host *))

/* The descriptor's size in ABI 1.1: up to and including `host`. */
#define L4LB_POLICY_DESCRIPTOR_SIZE_1_1 (offsetof(l4lb_policy_descriptor, host) + sizeof(const l4lb_host *))

/* True when a descriptor of `descriptor_size` bytes, as passed to the entry point (or as a plugin
 * declares in struct_size), holds `explain` (ABI 1.2). */
#define L4LB_POLICY_HAS_EXPLAIN(descriptor_size) \
    ((descriptor_size) >= offsetof(l4lb_policy_descriptor, explain) + sizeof(void *))

/* True when a descriptor of `descriptor_size` bytes holds `pick_pool` (ABI 1.3). */
#define L4LB_POLICY_HAS_PICK_POOL(descriptor_size) \
    ((descriptor_size) >= offsetof(l4lb_policy_descriptor, pick_pool) + sizeof(void *))

/* The entry point, exported by every plugin as
 *
 *     int l4lb_policy_entry(l4lb_policy_descriptor *descriptor, size_t descriptor_size);
 *
 * l4lb passes a descriptor that is zeroed but for `host` (ABI 1.1), and its size; the plugin fills
 * the fields it knows (from abi_major to connection_closed, explain and pick_pool; never `host`) and returns 0,
 * or returns non-zero to refuse loading. Called once, on the control thread. (Not declared here, so
 * that a plugin written in a language with its own export syntax can include this header too.) */
typedef int (*l4lb_policy_entry_fn)(l4lb_policy_descriptor *descriptor, size_t descriptor_size);

#ifdef __cplusplus
}
#endif

#endif /* L4LB_POLICY_H */
