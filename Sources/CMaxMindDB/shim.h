// libmaxminddb (Debian's libmaxminddb-dev), for the geo-routing plugin. MMDB_get_value is variadic
// and so not callable from Swift: the plugin uses MMDB_aget_value.
#include <maxminddb.h>
