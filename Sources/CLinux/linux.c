#define _GNU_SOURCE
#include <sys/socket.h>

#include "l4lb_linux.h"

int l4lb_accept4(int fd, struct sockaddr *address, unsigned int *length, int flags) {
    return accept4(fd, address, length, flags);
}
