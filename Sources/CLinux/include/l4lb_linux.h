// Linux calls that Swift's Glibc module leaves out (GNU extensions, packed structs, variadic ioctl):
// epoll, eventfd, accept4, spawn file actions, pidfd, memfd.
#ifndef L4LB_LINUX_H
#define L4LB_LINUX_H

#include <spawn.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

// Declared, not included: this header must not pull <sys/socket.h> into this module, or Swift code
// that imports both this module and Glibc loses the socket constants to an ambiguity.
struct sockaddr;

// epoll_event is packed on x86_64; these read and write it without Swift touching the layout.
static inline void l4lb_epoll_event_set(struct epoll_event *event, uint32_t events, uint64_t token) {
    event->events = events;
    event->data.u64 = token;
}

static inline uint32_t l4lb_epoll_event_events(const struct epoll_event *event) {
    return event->events;
}

static inline uint64_t l4lb_epoll_event_token(const struct epoll_event *event) {
    return event->data.u64;
}

// accept4(2), which glibc declares only with _GNU_SOURCE: the accepted socket comes back
// non-blocking and close-on-exec with no further system call.
int l4lb_accept4(int fd, struct sockaddr *address, unsigned int *length, int flags);

// Bytes in the socket's send queue that the peer has not acknowledged (ioctl SIOCOUTQ, which
// Swift cannot call: ioctl is variadic). -1 if the call failed.
int l4lb_unacknowledged_bytes(int fd);

// Bytes in the socket's receive queue that l4lb has not read (ioctl SIOCINQ). -1 if the call failed.
int l4lb_unread_bytes(int fd);

// posix_spawn_file_actions_addclosefrom_np (glibc 2.34+, a GNU extension Swift does not see): the
// child closes every descriptor from `from` up, so that it inherits only what it was given.
int l4lb_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

// posix_spawn_file_actions_addchdir_np (glibc 2.29+, also a GNU extension): the child starts in
// `path`, with no chdir in the parent, whose other threads share its working directory.
int l4lb_spawn_chdir(posix_spawn_file_actions_t *actions, const char *path);

// pidfd_open(2) (Linux 5.3+): a descriptor that polls readable once process `pid` has exited, so
// that waiting for a child is a poll with a timeout, not a loop of looks. -1 if the kernel lacks it.
int l4lb_pidfd_open(int pid);

// memfd_create(2) with MFD_CLOEXEC, which glibc declares only with _GNU_SOURCE: an anonymous file,
// for a private copy of a plugin (each version its own inode, so dlopen never hands back the old one).
int l4lb_memfd(const char *name);

// Names the calling thread (pthread_setname_np, a GNU extension): what `top -H`, `ps -L` and perf
// show. Linux keeps 15 bytes; a longer name is cut, not refused.
void l4lb_name_current_thread(const char *name);

// The CPUs this process may run on (sched_getaffinity; CPU_ISSET is a macro Swift cannot call):
// writes up to `capacity` CPU numbers, ascending, to `cpus` and returns how many, or -1.
int l4lb_allowed_cpus(int *cpus, int capacity);

// Pins the calling thread to one CPU (sched_setaffinity on the thread). 0, or an errno value.
int l4lb_pin_current_thread(int cpu);

// Gives the calling thread the process's nice value (its first thread's): a thread started from a
// Dispatch worker has the worker's (0), not what `nice` or systemd's Nice= gave the process.
// 0, or an errno value (EACCES: a higher priority than the thread has needs CAP_SYS_NICE).
int l4lb_take_process_nice(void);

// Asks the kernel's fair scheduler (EEVDF, Linux 6.12 and later) for a time slice of `nanoseconds`
// for the calling thread: sched_setattr with sched_runtime, which glibc does not wrap. The thread's
// policy and nice value are kept; a real-time thread (no slice) is left alone. Kernels before 6.12
// accept the call and ignore the slice. 0, or an errno value.
int l4lb_set_current_thread_slice(unsigned long long nanoseconds);

// The text of an errno value (strerrordesc_np, glibc 2.32+): thread-safe, unlike strerror, whose
// buffer relay threads would share. Never NULL.
const char *l4lb_errno_text(int code);

#endif
