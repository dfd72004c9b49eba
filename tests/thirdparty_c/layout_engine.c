/*
 * Proves the struct layouts: eng_mgt_func reports what it reads through the C structs, and
 * fill_task_params / start_task leave marks in tk->params that later calls read back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etmemd_thirdparty_export.h"

struct task_mark {
    int starts;
    int stops;
};

static int fill_eng(GKeyFile *config, struct engine *eng)
{
    char *tag = g_key_file_get_string(config, "engine", "tag", NULL);

    if (tag == NULL)
        return -1;
    eng->params = strdup(tag);
    g_free(tag);
    return eng->params == NULL ? -1 : 0;
}

static void clear_eng(struct engine *eng)
{
    free(eng->params);
    eng->params = NULL;
}

static int fill_task(GKeyFile *config, struct task *tk)
{
    (void)config;
    tk->params = calloc(1, sizeof(struct task_mark));
    return tk->params == NULL ? -1 : 0;
}

static void clear_task(struct task *tk)
{
    free(tk->params);
    tk->params = NULL;
}

static int start(struct engine *eng, struct task *tk)
{
    (void)eng;
    ((struct task_mark *)tk->params)->starts++;
    return 0;
}

static void stop(struct engine *eng, struct task *tk)
{
    (void)eng;
    ((struct task_mark *)tk->params)->stops++;
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    char buf[1024];
    int n;
    int tasks = 0;

    for (struct task *t = eng->tasks; t != NULL; t = t->next)
        tasks++;
    if (strcmp(cmd, "big") == 0) {
        /* more than a pipe buffer, with the two bytes that would end a reply on the wire */
        static char big[200001];

        memset(big, 'x', sizeof(big) - 1);
        big[1000] = (char)0xff;
        big[2000] = (char)0xfe;
        big[sizeof(big) - 1] = '\n';
        return write(fd, big, sizeof(big)) == (ssize_t)sizeof(big) ? 0 : -1;
    }
    if (strcmp(cmd, "show") != 0)
        return -1;
    if (tk == NULL) {
        const struct page_scan *ps = eng->proj->scan_param;

        n = snprintf(buf, sizeof(buf),
                     "type=%d name=%s tag=%s project=%s started=%d loop=%d interval=%d sleep=%d "
                     "sysmem=%d tasks=%d first=%s\n",
                     eng->engine_type, eng->name, (char *)eng->params, eng->proj->name,
                     (int)eng->proj->start, ps->loop, ps->interval, ps->sleep,
                     eng->proj->sysmem_threshold, tasks, eng->tasks ? eng->tasks->name : "-");
    } else {
        const struct task_mark *mark = tk->params;

        n = snprintf(buf, sizeof(buf),
                     "task=%s type=%s value=%s max_threads=%d swap_flag=%d starts=%d stops=%d "
                     "same_engine=%d project=%s\n",
                     tk->name, tk->type, tk->value, tk->max_threads, tk->swap_flag, mark->starts,
                     mark->stops, tk->eng == eng, tk->eng->proj->name);
    }
    return write(fd, buf, (size_t)n) == n ? 0 : -1;
}

struct engine_ops layout_ops = {
    .fill_eng_params = fill_eng,
    .clear_eng_params = clear_eng,
    .fill_task_params = fill_task,
    .clear_task_params = clear_task,
    .start_task = start,
    .stop_task = stop,
    .eng_mgt_func = mgt,
};
