/*
 * libvirt's event loop and its notices for vmdr, without JavaScript, and VM starts on threads of
 * their own: built into libvmdr-libvirt-events.so (scripts/build-shim) and loaded by koffi on the
 * call threads.
 *
 * Why C: libvirt reports a domain's lifecycle and a connection's closing only through callbacks,
 * and a koffi callback that libvirt calls crashes a Node process whose worker threads use koffi
 * (koffi 2.16, src/koffi/src/ffi.cc RelayCallback): a callback run on a thread that is inside a
 * koffi call of another koffi instance (each worker thread is one) runs in that thread's isolate,
 * not the one that registered it. Measured in this lab: "Buffer is not defined" from a lifecycle
 * callback, V8's "Entering the V8 API without proper locking" from a close callback run on a call
 * thread, and an abort when a callback ran during a thread's teardown. No maintained package does
 * this for Node: the one libvirt binding on npm (@unraid/libvirt, which vmdr replaced) has no
 * events, and an N-API addon of our own would be a larger native part than this file.
 *
 * So the callbacks are C, and they only copy what they need into fixed-size records written to a
 * pipe (a write of at most PIPE_BUF bytes is atomic, so records from several threads never
 * interleave). The main thread reads that pipe like any other (api/events.ts). libvirt's event
 * loop runs on a thread of ours that runs no JavaScript either: no Node worker has to start
 * before a connection opens, and nothing has to wake it for the process to exit.
 *
 * Why starts too: virDomainCreate blocks for as long as libvirtd takes to launch QEMU (0.5-2 s
 * here), and a plan starts its VMs in parallel. On the call threads each start held a Node worker
 * (an isolate of its own, ~45 ms of CPU to start on this machine, spent exactly while the failover
 * is on the clock). vmdr_start_domain hands the start to a plain thread and returns at once; the
 * outcome comes back as a record on the same pipe, read on the main thread (api/events.ts), with
 * libvirt's error read by the thread that failed (libvirt keeps the last error per thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

enum { RECORD_LIFECYCLE = 1, RECORD_CLOSED = 2, RECORD_STARTED = 3 };

/* Read by api/events.ts: keep the two in step. */
struct vmdr_event_record {
    uint64_t watch;   /* which watched connection (vmdr_events_watch's number); started: the caller's request number */
    uint64_t time;    /* when libvirt reported it: microseconds since the epoch */
    int32_t kind;     /* RECORD_* */
    int32_t event;    /* lifecycle: virDomainEventType; closed: virConnectCloseReason; started: 0, or -1 when it failed */
    int32_t detail;   /* lifecycle: the event's detail (virDomainEventStoppedDetailType, ...); started: the failure's virErrorNumber */
    int32_t domain;   /* started: the failure's virErrorDomain */
    char uuid[40];    /* VIR_UUID_STRING_BUFLEN and padding; started: the libvirt function that failed */
    char name[440];   /* NUL-terminated, cut at 439 bytes; started: libvirt's message */
};
_Static_assert(sizeof(struct vmdr_event_record) == 512, "api/events.ts reads 512-byte records");

struct watch {
    virConnectPtr conn;
    uint64_t id;
    int lifecycle; /* libvirt's callback id, or -1 */
    int closing;   /* the close callback is registered */
};

/* Guards the watch table and the pipe's write end; no libvirt call is made while it is held. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct watch *watches;
static size_t watch_count, watch_room;
static uint64_t next_watch = 1;
static int records[2] = {-1, -1};
static int started = -1;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Writes one record for a connection still watched; a record for one no longer watched is dropped. */
static void post(virConnectPtr conn, struct vmdr_event_record *record)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    record->time = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < watch_count; i++) {
        if (watches[i].conn != conn)
            continue;
        record->watch = watches[i].id;
        /* A full pipe (the main thread is not reading) drops the record: waits fall back to polling. */
        ssize_t written = write(records[1], record, sizeof *record);
        (void)written;
        break;
    }
    pthread_mutex_unlock(&lock);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    struct vmdr_event_record record = {.kind = RECORD_LIFECYCLE, .event = event, .detail = detail};
    const char *name = virDomainGetName(dom);
    (void)opaque;
    /* The domain is only valid during this call: its UUID and name are copied. */
    if (virDomainGetUUIDString(dom, record.uuid) < 0)
        record.uuid[0] = '\0';
    if (name)
        strncpy(record.name, name, sizeof record.name - 1);
    post(conn, &record);
    return 0;
}

/* Runs on whichever thread noticed the socket close, possibly inside another libvirt call. */
static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    struct vmdr_event_record record = {.kind = RECORD_CLOSED, .event = reason};
    (void)opaque;
    post(conn, &record);
}

static void *run_loop(void *unused)
{
    (void)unused;
    for (;;) {
        /* It fails only when poll itself fails; do not spin on such a failure. */
        if (virEventRunDefaultImpl() < 0) {
            virResetLastError();
            usleep(100 * 1000);
        }
    }
    return NULL;
}

static void start(void)
{
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;

    if (virEventRegisterDefaultImpl() < 0)
        return;
    if (pipe2(records, O_NONBLOCK | O_CLOEXEC) < 0)
        return;
    /* Room for 2048 records; the default 64 KiB (128) where the system refuses more. */
    (void)fcntl(records[1], F_SETPIPE_SZ, 1 << 20);
    /* Process signals go to Node's threads, never to the loop's. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, run_loop, NULL) == 0)
        started = 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/*
 * Registers libvirt's event loop and starts its thread, once per process; it must happen before
 * the first virConnectOpen (libvirt registers each connection's socket with it). Returns the
 * pipe's read end, or -1.
 */
int vmdr_events_start(void)
{
    pthread_once(&once, start);
    return started == 0 ? records[0] : -1;
}

/*
 * Reports the lifecycle of every VM on `conn`, and its closing, as records with the returned
 * number (> 0); -1 when libvirt refused the lifecycle events (its error is left to be read).
 */
int vmdr_events_watch(virConnectPtr conn)
{
    struct watch added = {.conn = conn, .lifecycle = -1};
    int lifecycle, closing;

    pthread_mutex_lock(&lock);
    if (watch_count == watch_room) {
        size_t room = watch_room ? watch_room * 2 : 8;
        struct watch *grown = realloc(watches, room * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&lock);
            return -1;
        }
        watches = grown;
        watch_room = room;
    }
    /* In the table before libvirt knows the callbacks, so their first records are not dropped. */
    added.id = next_watch++;
    watches[watch_count++] = added;
    pthread_mutex_unlock(&lock);

    lifecycle = virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), NULL, NULL);
    closing = lifecycle >= 0 && virConnectRegisterCloseCallback(conn, on_close, NULL, NULL) == 0;

    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < watch_count; i++) {
        if (watches[i].conn != conn)
            continue;
        if (lifecycle < 0) {
            watches[i] = watches[--watch_count];
        } else {
            watches[i].lifecycle = lifecycle;
            watches[i].closing = closing;
        }
        break;
    }
    pthread_mutex_unlock(&lock);
    return lifecycle < 0 ? -1 : (int)added.id;
}

/*
 * Undoes vmdr_events_watch; must come before virConnectClose (a callback on a freed connection
 * is a crash). No record for `conn` is written after this returns.
 */
void vmdr_events_unwatch(virConnectPtr conn)
{
    struct watch removed = {.conn = NULL};

    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < watch_count; i++) {
        if (watches[i].conn != conn)
            continue;
        removed = watches[i];
        watches[i] = watches[--watch_count];
        break;
    }
    pthread_mutex_unlock(&lock);
    if (!removed.conn)
        return;
    /* Each removes its callback from the client first, so they free it even when libvirtd is gone. */
    if (removed.lifecycle >= 0)
        virConnectDomainEventDeregisterAny(conn, removed.lifecycle);
    if (removed.closing)
        virConnectUnregisterCloseCallback(conn, on_close);
    virResetLastError();
}

struct start {
    virConnectPtr conn; /* referenced for the thread: closing the connection cannot free it under the start */
    uint64_t request;
    char ref[];         /* the VM's UUID or name */
};

static int is_uuid(const char *s)
{
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == '-' ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    }
    return s[sizeof shape - 1] == '\0';
}

/* As api/procedures.ts lookupDomain: a VM named like a UUID is still found by its name. */
static virDomainPtr lookup(virConnectPtr conn, const char *ref, const char **failed)
{
    virDomainPtr dom;

    if (is_uuid(ref)) {
        dom = virDomainLookupByUUIDString(conn, ref);
        if (dom)
            return dom;
        virErrorPtr err = virGetLastError();
        if (!err || err->code != VIR_ERR_NO_DOMAIN) {
            *failed = "virDomainLookupByUUIDString";
            return NULL;
        }
        virResetLastError();
    }
    dom = virDomainLookupByName(conn, ref);
    if (!dom)
        *failed = "virDomainLookupByName";
    return dom;
}

/*
 * Unlike a notice, an outcome is never dropped while the pipe is full (its caller would wait for
 * its time-out): the writer waits until the main thread has read, a minute at most.
 */
static void post_outcome(struct vmdr_event_record *record)
{
    struct timespec now;
    struct pollfd writable = {.fd = records[1], .events = POLLOUT};

    clock_gettime(CLOCK_REALTIME, &now);
    record->time = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
    for (int waited_ms = 0; waited_ms < 60 * 1000; waited_ms += 100) {
        pthread_mutex_lock(&lock);
        ssize_t written = write(records[1], record, sizeof *record);
        pthread_mutex_unlock(&lock);
        if (written == (ssize_t)sizeof *record || (written < 0 && errno != EAGAIN && errno != EINTR))
            return;
        (void)poll(&writable, 1, 100);
    }
}

static void *run_start(void *arg)
{
    struct start *start = arg;
    struct vmdr_event_record record = {.watch = start->request, .kind = RECORD_STARTED};
    const char *failed = NULL;
    virDomainPtr dom;

    virResetLastError();
    dom = lookup(start->conn, start->ref, &failed);
    if (dom && virDomainCreate(dom) < 0)
        failed = "virDomainCreate";
    if (failed) {
        virErrorPtr err = virGetLastError();
        record.event = -1;
        record.detail = err ? err->code : VIR_ERR_INTERNAL_ERROR;
        record.domain = err ? err->domain : VIR_FROM_NONE;
        strncpy(record.uuid, failed, sizeof record.uuid - 1);
        if (err && err->message)
            strncpy(record.name, err->message, sizeof record.name - 1);
    }
    if (dom)
        virDomainFree(dom);
    virResetLastError();
    virConnectClose(start->conn);
    free(start);
    post_outcome(&record);
    return NULL;
}

/*
 * Starts the VM `ref` (UUID or name) on `conn` on a thread of its own and returns at once: 0, and
 * later one RECORD_STARTED record carrying `request`; -1 when no thread could be made (nothing
 * was started, no record comes). vmdr_events_start must have run.
 */
int vmdr_start_domain(virConnectPtr conn, const char *ref, uint64_t request)
{
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    size_t length = strlen(ref);
    struct start *start;
    int made;

    if (started != 0 || length > 4096)
        return -1;
    start = malloc(sizeof *start + length + 1);
    if (!start)
        return -1;
    memcpy(start->ref, ref, length + 1);
    start->request = request;
    start->conn = conn;
    if (virConnectRef(conn) < 0) {
        free(start);
        return -1;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    made = pthread_create(&thread, &attr, run_start, start) == 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!made) {
        virConnectClose(conn);
        free(start);
        return -1;
    }
    return 0;
}
