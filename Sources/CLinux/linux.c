#define _GNU_SOURCE
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/sockios.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "l4lb_linux.h"

int l4lb_accept4(int fd, struct sockaddr *address, unsigned int *length, int flags) {
    return accept4(fd, address, length, flags);
}

int l4lb_unacknowledged_bytes(int fd) {
    int bytes = 0;
    return ioctl(fd, SIOCOUTQ, &bytes) == 0 ? bytes : -1;
}

int l4lb_unread_bytes(int fd) {
    int bytes = 0;
    return ioctl(fd, SIOCINQ, &bytes) == 0 ? bytes : -1;
}

int l4lb_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int l4lb_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int l4lb_pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int l4lb_memfd(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

void l4lb_name_current_thread(const char *name) {
    char kept[16];
    strncpy(kept, name, sizeof kept - 1);
    kept[sizeof kept - 1] = 0;
    pthread_setname_np(pthread_self(), kept);
}

int l4lb_allowed_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}

int l4lb_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}

int l4lb_take_process_nice(void) {
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)getpid());
    if (nice == -1 && errno != 0) return errno;
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice) == 0 ? 0 : errno;
}

// The kernel's struct sched_attr (first version, 48 bytes): glibc 2.36 has no header for it.
struct l4lb_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

int l4lb_set_current_thread_slice(unsigned long long nanoseconds) {
    int policy = sched_getscheduler(0);
    if (policy < 0) return errno;
    int resetOnFork = policy & SCHED_RESET_ON_FORK;
    policy &= ~SCHED_RESET_ON_FORK;
    // Only the fair policies have a slice; a thread an operator made real-time keeps its policy.
    if (policy != SCHED_OTHER && policy != SCHED_BATCH) return 0;
    // sched_setattr sets the nice value too: pass the thread's own, or an operator's `nice` is lost.
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    if (nice == -1 && errno != 0) return errno;
    struct l4lb_sched_attr attr = {0};
    attr.size = sizeof attr;
    attr.sched_policy = (uint32_t)policy;
    attr.sched_flags = resetOnFork ? 0x01 : 0;  // SCHED_FLAG_RESET_ON_FORK: kept, not cleared
    attr.sched_nice = nice;
    attr.sched_runtime = nanoseconds;
    return syscall(SYS_sched_setattr, 0, &attr, 0) == 0 ? 0 : errno;
}

const char *l4lb_errno_text(int code) {
    const char *text = strerrordesc_np(code);
    return text != NULL ? text : "unknown error";
}
