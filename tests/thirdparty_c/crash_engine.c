/*
 * A policy with a fatal bug: start_task and eng_mgt_func("crash") dereference NULL.
 * Only usable with isolate=yes, where the crash must stay a failure of this engine.
 */
#include <string.h>
#include <unistd.h>

#include "etmemd_thirdparty_export.h"

static volatile int *nowhere;

static int start(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    return *nowhere;
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    (void)eng;
    (void)tk;
    if (strcmp(cmd, "crash") == 0)
        *nowhere = 1;
    return write(fd, "alive\n", 6) == 6 ? 0 : -1;
}

struct engine_ops crash_ops = {
    .start_task = start,
    .eng_mgt_func = mgt,
};
