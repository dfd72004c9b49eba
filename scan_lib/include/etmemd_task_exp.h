/*
 * etmemd_task_exp.h - struct task (88 bytes) and struct task_pid (32 bytes) on LP64.
 */
#ifndef ETMEMD_TASK_EXP_H
#define ETMEMD_TASK_EXP_H

#include <pthread.h>
#include "etmemd_exp.h"

struct engine;
struct timer_thread_t;
struct thread_pool_t;

/* One target process of a task (etmemd keeps these lists for pid-managed tasks). */
struct task_pid {
    unsigned int pid;
    float rt_swapin_rate;
    void *params;               /* owned by the engine (alloc_pid_params / free_pid_params) */
    struct task *tk;
    struct task_pid *next;
};

struct task {
    char *type;                 /* "pid" or "name" */
    char *value;                /* the pid or the process name */
    char *name;
    int max_threads;
    int swap_flag;              /* 1 for swap_flag=yes */
    struct task_pid *pids;
    struct engine *eng;
    void *params;               /* owned by the engine (fill_task_params / clear_task_params) */
    pthread_t task_pt;          /* reserved for etmemd */
    struct timer_thread_t *timer_inst;      /* reserved for etmemd */
    struct thread_pool_t *threadpool_inst;  /* reserved for etmemd */
    struct task *next;
};

#endif /* ETMEMD_TASK_EXP_H */
