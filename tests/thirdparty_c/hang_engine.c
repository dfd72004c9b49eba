/*
 * A policy whose start_task never returns for a task named "hang" (others start at once),
 * nor eng_mgt_func("hang"); "abort" and
 * "exit" end the process the policy runs in. Only for isolate=yes or deadline tests.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etmemd_thirdparty_export.h"

static int start(struct engine *eng, struct task *tk)
{
    (void)eng;
    if (tk->name == NULL || strcmp(tk->name, "hang") != 0)
        return 0;
    for (;;)
        pause();
    return 0;
}

static void stop(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    (void)eng;
    (void)tk;
    if (strcmp(cmd, "hang") == 0)
        for (;;)
            pause();
    if (strcmp(cmd, "abort") == 0)
        abort();
    if (strcmp(cmd, "exit") == 0)
        exit(3);
    return write(fd, "alive\n", 6) == 6 ? 0 : -1;
}

struct engine_ops hang_ops = {
    .start_task = start,
    .stop_task = stop,
    .eng_mgt_func = mgt,
};
