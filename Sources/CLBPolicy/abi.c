// The CLBPolicy target exists for its header, include/l4lb_policy.h; SwiftPM needs one source file.
#include "l4lb_policy.h"
