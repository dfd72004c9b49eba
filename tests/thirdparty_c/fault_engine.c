/*
 * A policy that fails in the op named by the environment variable ETMEM_FAULT_OP, the way
 * ETMEM_FAULT_HOW says: "hang" (never returns), "segv", "abort" or "exit" (status 3). Every
 * other op succeeds at once. Only for isolate=yes: the helper process inherits etmemd's
 * environment. Used by benchmarks/robustness.py --only faults.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etmemd_thirdparty_export.h"

static volatile int *nowhere;

static void maybe_fail(const char *op)
{
    const char *want = getenv("ETMEM_FAULT_OP");
    const char *how = getenv("ETMEM_FAULT_HOW");

    if (want == NULL || how == NULL || strcmp(want, op) != 0)
        return;
    if (strcmp(how, "hang") == 0)
        for (;;)
            pause();
    if (strcmp(how, "segv") == 0)
        *nowhere = 1;
    if (strcmp(how, "abort") == 0)
        abort();
    if (strcmp(how, "exit") == 0)
        exit(3);
}

static int fill_eng(GKeyFile *config, struct engine *eng)
{
    (void)config;
    (void)eng;
    maybe_fail("fill_eng_params");
    return 0;
}

static void clear_eng(struct engine *eng)
{
    (void)eng;
    maybe_fail("clear_eng_params");
}

static int fill_task(GKeyFile *config, struct task *tk)
{
    (void)config;
    (void)tk;
    maybe_fail("fill_task_params");
    return 0;
}

static void clear_task(struct task *tk)
{
    (void)tk;
    maybe_fail("clear_task_params");
}

static int start(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    maybe_fail("start_task");
    return 0;
}

static void stop(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    maybe_fail("stop_task");
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    (void)eng;
    (void)tk;
    (void)cmd;
    maybe_fail("eng_mgt_func");
    return write(fd, "alive\n", 6) == 6 ? 0 : -1;
}

struct engine_ops fault_ops = {
    .fill_eng_params = fill_eng,
    .clear_eng_params = clear_eng,
    .fill_task_params = fill_task,
    .clear_task_params = clear_task,
    .start_task = start,
    .stop_task = stop,
    .eng_mgt_func = mgt,
};
