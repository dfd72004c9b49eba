/*
 * etmemd_engine_exp.h - struct engine (80 bytes) and struct engine_ops (72 bytes) on LP64.
 *
 * A policy exports one `struct engine_ops` DATA object per engine flavour; etmemd finds it by the
 * engine's ops_name key. Every op may be NULL (see docs/thirdparty.md for what NULL means).
 */
#ifndef ETMEMD_ENGINE_EXP_H
#define ETMEMD_ENGINE_EXP_H

#include "etmemd_exp.h"
#include "etmemd_keyfile.h"

struct project;
struct task;
struct task_pid;
struct page_refs;
struct engine_ops;

/* engine->engine_type; a policy loaded from a .so is always THIRDPARTY_ENGINE. */
enum eng_type {
    SLIDE_ENGINE = 0,
    CSLIDE_ENGINE,
    MEMDCD_ENGINE,
    DAMON_ENGINE,
    PSI_FB_ENGINE,
    DYNAMIC_FB_ENGINE,
    HISTORICAL_FB_ENGINE,
    THIRDPARTY_ENGINE,
};

struct engine {
    int engine_type;
    char *name;                 /* the eng_name key */
    void *params;               /* owned by the engine (fill_eng_params / clear_eng_params) */
    struct project *proj;
    struct page_refs *page_ref; /* unused by etmemd */
    struct engine_ops *ops;
    struct task *tasks;         /* newest first */
    uint64_t page_cnt;          /* unused by etmemd */
    struct engine *next;
    void *handler;              /* the dlopen handle of the policy */
};

struct engine_ops {
    /* obj add of [engine]; 0 = ok. On failure clear_eng_params is not called. */
    int (*fill_eng_params)(GKeyFile *config, struct engine *eng);
    /* engine deletion, after all its tasks were removed. */
    void (*clear_eng_params)(struct engine *eng);
    /* obj add of [task]; 0 = ok. On failure clear_task_params is not called. */
    int (*fill_task_params)(GKeyFile *config, struct task *tk);
    /* task deletion (after stop_task), and when starting a newly added task fails. */
    void (*clear_task_params)(struct task *tk);
    /* project start, or task add into a started project; 0 = ok. */
    int (*start_task)(struct engine *eng, struct task *tk);
    /* project stop, or deletion of a task of a started project. */
    void (*stop_task)(struct engine *eng, struct task *tk);
    /* a target pid appears in a core-managed pid list; 0 = keep it. */
    int (*alloc_pid_params)(struct engine *eng, struct task_pid **tk_pid);
    /* a target pid leaves a core-managed pid list. */
    void (*free_pid_params)(struct engine *eng, struct task_pid **tk_pid);
    /* `etmem engine CMD`: write text to fd (never bytes 0xff/0xfe); 0 = ok. */
    int (*eng_mgt_func)(struct engine *eng, struct task *tk, char *cmd, int fd);
};

#endif /* ETMEMD_ENGINE_EXP_H */
