/*
 * A policy with the behaviour of the original etmem test plugin (libthirdparty_engine.so):
 * four engine_ops objects; private keys engine_private_key=1024 and task_private_key=2048;
 * eng_mgt_func answers "msg to client\n". Written for the etmem-in-Python tests.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etmemd_thirdparty_export.h"

/* Keep the key's value in *slot when it equals `want`; anything else is a refusal. */
static int take_key(GKeyFile *config, const char *group, const char *key, const char *want,
                    void **slot)
{
    char *value = g_key_file_get_string(config, group, key, NULL);

    if (value == NULL)
        return -1;
    if (strcmp(value, want) != 0) {
        g_free(value);
        return -1;
    }
    *slot = value;
    return 0;
}

static int fill_eng(GKeyFile *config, struct engine *eng)
{
    return take_key(config, "engine", "engine_private_key", "1024", &eng->params);
}

static void clear_eng(struct engine *eng)
{
    g_free(eng->params);
    eng->params = NULL;
}

static int fill_task(GKeyFile *config, struct task *tk)
{
    return take_key(config, "task", "task_private_key", "2048", &tk->params);
}

static void clear_task(struct task *tk)
{
    g_free(tk->params);
    tk->params = NULL;
}

static int start_ok(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    return 0;
}

static int start_fails(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    return -1;
}

static void stop_nothing(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
}

static int alloc_pid(struct engine *eng, struct task_pid **tk_pid)
{
    (void)eng;
    (void)tk_pid;
    return 0;
}

static void free_pid(struct engine *eng, struct task_pid **tk_pid)
{
    (void)eng;
    (void)tk_pid;
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    static const char msg[] = "msg to client\n";

    (void)eng;
    (void)tk;
    (void)cmd;
    return write(fd, msg, sizeof(msg) - 1) == (ssize_t)(sizeof(msg) - 1) ? 0 : -1;
}

struct engine_ops my_engine_ops = {
    .fill_eng_params = fill_eng,
    .clear_eng_params = clear_eng,
    .fill_task_params = fill_task,
    .clear_task_params = clear_task,
    .start_task = start_ok,
    .stop_task = stop_nothing,
    .alloc_pid_params = alloc_pid,
    .free_pid_params = free_pid,
    .eng_mgt_func = mgt,
};

struct engine_ops start_error_ops = {
    .fill_eng_params = fill_eng,
    .clear_eng_params = clear_eng,
    .fill_task_params = fill_task,
    .clear_task_params = clear_task,
    .start_task = start_fails,
    .stop_task = stop_nothing,
    .alloc_pid_params = alloc_pid,
    .free_pid_params = free_pid,
    .eng_mgt_func = mgt,
};

struct engine_ops start_not_null_ops = {
    .start_task = start_ok,
};

struct engine_ops start_null_ops;
