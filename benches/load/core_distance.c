/* How far apart the machine's first two CPUs are: two threads pinned to
 * CPUs 0 and 1 bounce one cache line, and the mean round trip is printed in
 * nanoseconds, next to the same loop run by one thread alone (the baseline).
 * On a VM the hypervisor may move the vCPUs; benches/load/run runs this
 * before every timed run, since a far placement slows any program whose
 * threads share data, colorgate's included, and not nginx's processes.
 * Build: cc -O2 -pthread core_distance.c -o core_distance */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define ROUNDS 1000000L

static _Alignas(64) atomic_long ball;

static int pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Waits for `from`, answers `from + 1`, for every odd (or even) turn. */
static void play(long first) {
    for (long i = first; i < 2 * ROUNDS; i += 2) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != i) {
        }
        atomic_store_explicit(&ball, i + 1, memory_order_release);
    }
}

static void *other(void *unused) {
    (void)unused;
    if (pin(1) != 0) {
        return (void *)1;
    }
    play(1);
    return NULL;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(void) {
    if (pin(0) != 0) {
        fprintf(stderr, "cannot pin to CPU 0\n");
        return 1;
    }
    /* Baseline: one thread plays both sides, so the line never moves. */
    double t0 = now_ns();
    for (long i = 0; i < 2 * ROUNDS; i++) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != i) {
        }
        atomic_store_explicit(&ball, i + 1, memory_order_release);
    }
    double alone = (now_ns() - t0) / ROUNDS;

    atomic_store(&ball, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, other, NULL) != 0) {
        fprintf(stderr, "cannot start the second thread\n");
        return 1;
    }
    t0 = now_ns();
    play(0);
    while (atomic_load(&ball) != 2 * ROUNDS) {
    }
    double shared = (now_ns() - t0) / ROUNDS;
    void *failed;
    pthread_join(t, &failed);
    if (failed != NULL) {
        fprintf(stderr, "cannot pin to CPU 1\n");
        return 1;
    }
    printf("round_trip_ns %.1f alone_ns %.1f ratio %.1f\n", shared, alone, shared / alone);
    return 0;
}
