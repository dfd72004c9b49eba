/*
 * etmemd_project_exp.h - struct project as etmemd lays it out (56 bytes on LP64).
 */
#ifndef ETMEMD_PROJECT_EXP_H
#define ETMEMD_PROJECT_EXP_H

#include "etmemd_exp.h"

struct engine;

enum scan_type {
    PAGE_SCAN = 0,
    REGION_SCAN,
    PSI_SCAN,
};

/* project->scan_param of a PAGE_SCAN project; the field order is the ABI (interval first). */
struct page_scan {
    int interval;
    int loop;
    int sleep;
};

/* project->scan_param of a PSI_SCAN project. */
struct psi_scan {
    int interval;
};

/* project->scan_param of a REGION_SCAN (DAMON) project. */
struct region_scan {
    unsigned long sample_interval;
    unsigned long aggr_interval;
    unsigned long update_interval;
    unsigned long min_nr_regions;
    unsigned long max_nr_regions;
};

struct project {
    char *name;
    enum scan_type type;
    void *scan_param;           /* struct page_scan / psi_scan / region_scan, by type */
    int sysmem_threshold;       /* -1: not set */
    int swapcache_high_wmark;   /* -1: not set */
    int swapcache_low_wmark;    /* -1: not set */
    bool start;
    bool wmark_set;
    struct engine *engs;
    struct {
        struct project *sle_next;
    } entry;                    /* list link owned by etmemd */
};

#endif /* ETMEMD_PROJECT_EXP_H */
