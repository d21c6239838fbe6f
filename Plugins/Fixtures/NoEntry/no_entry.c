/* Test fixture: a shared library that exports no l4lb_policy_entry, which l4lb must refuse. */
int l4lb_not_the_entry(void) { return 42; }
