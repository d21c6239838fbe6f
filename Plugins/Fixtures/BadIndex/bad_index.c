/* Test fixture: loads and creates fine, but pick answers an index past the end of the pool. l4lb
 * must count the fault and serve the client with its built-in policy. */
#include "l4lb_policy.h"

static int marker;
static void *fixture_new(const char *c, size_t l, char *e, size_t n) { (void)c; (void)l; (void)e; (void)n; return &marker; }
static void fixture_destroy(void *i) { (void)i; }
static int64_t fixture_pick(void *i, const l4lb_address *c, const l4lb_backend *b, size_t n) {
    (void)i; (void)c; (void)b;
    return (int64_t)n + 7;
}

int l4lb_policy_entry(l4lb_policy_descriptor *descriptor, size_t descriptor_size) {
    (void)descriptor_size;
    descriptor->abi_major = L4LB_POLICY_ABI_MAJOR;
    descriptor->abi_minor = L4LB_POLICY_ABI_MINOR;
    descriptor->struct_size = sizeof(l4lb_policy_descriptor);
    descriptor->name = "fixture-bad-index";
    descriptor->instance_new = fixture_new;
    descriptor->instance_destroy = fixture_destroy;
    descriptor->pick = fixture_pick;
    return 0;
}
