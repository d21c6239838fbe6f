/* Test fixture: declares ABI major 99, which l4lb must refuse. */
#include "l4lb_policy.h"

static void *fixture_new(const char *c, size_t l, char *e, size_t n) { (void)c; (void)l; (void)e; (void)n; return (void *)1; }
static void fixture_destroy(void *i) { (void)i; }
static int64_t fixture_pick(void *i, const l4lb_address *c, const l4lb_backend *b, size_t n) { (void)i; (void)c; (void)b; (void)n; return 0; }

int l4lb_policy_entry(l4lb_policy_descriptor *descriptor, size_t descriptor_size) {
    (void)descriptor_size;
    descriptor->abi_major = 99;
    descriptor->abi_minor = 0;
    descriptor->struct_size = sizeof(l4lb_policy_descriptor);
    descriptor->name = "fixture-bad-abi";
    descriptor->instance_new = fixture_new;
    descriptor->instance_destroy = fixture_destroy;
    descriptor->pick = fixture_pick;
    return 0;
}
