/* Test fixture: a valid plugin whose instance_new always fails with a message l4lb must show. */
#include <string.h>

#include "l4lb_policy.h"

static void *fixture_new(const char *config, size_t length, char *error, size_t capacity) {
    (void)config;
    (void)length;
    strncpy(error, "fixture refuses every configuration", capacity - 1);
    error[capacity - 1] = '\0';
    return NULL;
}
static void fixture_destroy(void *i) { (void)i; }
static int64_t fixture_pick(void *i, const l4lb_address *c, const l4lb_backend *b, size_t n) { (void)i; (void)c; (void)b; (void)n; return 0; }

int l4lb_policy_entry(l4lb_policy_descriptor *descriptor, size_t descriptor_size) {
    (void)descriptor_size;
    descriptor->abi_major = L4LB_POLICY_ABI_MAJOR;
    descriptor->abi_minor = L4LB_POLICY_ABI_MINOR;
    descriptor->struct_size = sizeof(l4lb_policy_descriptor);
    descriptor->name = "fixture-create-fails";
    descriptor->instance_new = fixture_new;
    descriptor->instance_destroy = fixture_destroy;
    descriptor->pick = fixture_pick;
    return 0;
}
