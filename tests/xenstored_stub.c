/*
 * LD_PRELOAD library that lets oxenstored run without a Xen hypervisor, for
 * the tests (tests/xenstored.py compiles it with gcc).
 *
 * oxenstored opens the hypervisor interfaces at start-up even when told not
 * to set up dom0 (--no-domain-init): it only needs handles that work, and an
 * event channel file descriptor that never becomes readable (no guest ever
 * signals it). It also raises RLIMIT_NOFILE, which needs CAP_SYS_RESOURCE in
 * the initial user namespace; the tests run it in a user namespace of their
 * own, so that call is made to succeed without doing anything.
 */
#include <unistd.h>

struct rlimit;

static char handle[64];
static int event_pipe[2] = {-1, -1};

int setrlimit(int resource, const struct rlimit *limit)
{
    (void)resource;
    (void)limit;
    return 0;
}

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned flags)
{
    (void)logger;
    (void)dombuild_logger;
    (void)flags;
    return handle;
}

int xc_interface_close(void *xch)
{
    (void)xch;
    return 0;
}

void *xenevtchn_open(void *logger, unsigned flags)
{
    (void)logger;
    (void)flags;
    /* Nobody ever writes to this pipe: the descriptor never becomes readable. */
    if (event_pipe[0] < 0 && pipe(event_pipe) != 0)
        return 0;
    return handle;
}

int xenevtchn_fd(void *xce)
{
    (void)xce;
    return event_pipe[0];
}

int xenevtchn_bind_virq(void *xce, unsigned int virq)
{
    (void)xce;
    (void)virq;
    return 1; /* a port number */
}

void *xengnttab_open(void *logger, unsigned flags)
{
    (void)logger;
    (void)flags;
    return handle;
}
