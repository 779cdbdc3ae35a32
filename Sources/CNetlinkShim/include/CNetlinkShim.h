// Linux uapi and libc pieces that Swift's Glibc module does not export, made visible to Swift.
#ifndef CNETLINK_SHIM_H
#define CNETLINK_SHIM_H

// No _GNU_SOURCE here: it would change glibc's struct layouts against Swift's own Glibc module.
// The few GNU-only calls are declared by hand below.
#include <sched.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <linux/fib_rules.h>
#include <linux/veth.h>
#include <linux/errqueue.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter/nf_tables.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
// bpf(2) has no glibc wrapper and Swift cannot call the variadic syscall().
#include <sys/syscall.h>
extern long syscall(long number, ...);
static inline long cgn_bpf(int cmd, void *attr, unsigned int size) { return syscall(SYS_bpf, cmd, attr, size); }

#endif
#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
// bpf(2) has no glibc wrapper and Swift cannot call the variadic syscall().
#include <sys/syscall.h>
extern long syscall(long number, ...);
static inline long cgn_bpf(int cmd, void *attr, unsigned int size) { return syscall(SYS_bpf, cmd, attr, size); }

#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
// bpf(2) has no glibc wrapper and Swift cannot call the variadic syscall().
#include <sys/syscall.h>
extern long syscall(long number, ...);
static inline long cgn_bpf(int cmd, void *attr, unsigned int size) { return syscall(SYS_bpf, cmd, attr, size); }

#endif

extern int unshare(int flags);
extern int setns(int fd, int nstype);
extern pid_t gettid(void);

// Namespace syscalls: glibc declares them only under _GNU_SOURCE, which Swift's Glibc import lacks.
static inline int cgn_unshare(int flags) { return unshare(flags); }
static inline int cgn_setns(int fd, int nstype) { return setns(fd, nstype); }
static inline int cgn_clone_newnet(void) { return 0x40000000; }  // CLONE_NEWNET
static inline int cgn_clone_newns(void) { return 0x00020000; }   // CLONE_NEWNS
static inline int cgn_clone_newuts(void) { return 0x04000000; }  // CLONE_NEWUTS

// Thread id of the caller, for /proc/<tid>/... paths and diagnostics.
static inline pid_t cgn_gettid(void) { return gettid(); }

// bpf(2) has no glibc wrapper and Swift cannot call the variadic syscall().
#include <sys/syscall.h>
extern long syscall(long number, ...);
static inline long cgn_bpf(int cmd, void *attr, unsigned int size) { return syscall(SYS_bpf, cmd, attr, size); }

#endif
