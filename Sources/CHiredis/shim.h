// hiredis (Debian's libhiredis-dev 0.14), found with pkg-config. Only the blocking API is used:
// the control plane runs on its own thread, never on the threads that relay traffic.
#include <hiredis/hiredis.h>
