/*
 * etmemd_scan_exp.h - the page-scan API of libetmemd_scan.so and its structures (LP64 layouts).
 */
#ifndef ETMEMD_SCAN_EXP_H
#define ETMEMD_SCAN_EXP_H

#include "etmemd_exp.h"

/* flags of etmemd_get_page_refs(), passed to the kernel with IDLE_SCAN_ADD_FLAGS */
#define SCAN_AS_HUGE  0x01000000  /* report guest memory per 2 MiB */
#define SCAN_IGN_HOST 0x02000000  /* treat host page tables as idle */
#define VMA_SCAN_FLAG 0x1000      /* only VMAs marked with madvise(..., 203) */

#define VMA_STAT_READ 0
#define VMA_STAT_WRITE 1
#define VMA_STAT_EXEC 2
#define VMA_STAT_MAY_SHARE 3
#define VMA_STAT_INIT 4

#define VMA_PATH_STR_LEN 256
#define VMA_MAJOR_MINOR_LEN 8

enum page_type {
    PTE_TYPE = 0,
    PMD_TYPE,
    PUD_TYPE,
    PAGE_TYPE_INVAL,
};

/* one page seen by a scan; `count` sums the accessed weights of the passes merged into the list */
struct page_refs {
    uint64_t addr;
    int count;
    enum page_type type;
    struct page_refs *next;
};

/* one line of /proc/PID/maps */
struct vma {
    uint64_t start;
    uint64_t end;
    bool stat[VMA_STAT_INIT];   /* READ, WRITE, EXEC, MAY_SHARE */
    uint64_t offset;
    uint64_t inode;
    char path[VMA_PATH_STR_LEN];    /* as in maps, including its trailing newline */
    char major[VMA_MAJOR_MINOR_LEN];
    char minor[VMA_MAJOR_MINOR_LEN];
    struct vma *next;
};

struct vmas {
    uint64_t vma_cnt;
    struct vma *vma_list;
};

/* Must be called once before etmemd_get_page_refs(); returns -1 when already initialised. */
int etmemd_scan_init(void);
void etmemd_scan_exit(void);

/*
 * The VMAs of process `pid` (a decimal string). With vmflags (each exactly two letters, as in
 * smaps VmFlags) only VMAs having all of them; with is_anon_only only private anonymous-like
 * VMAs. NULL on error. Free with etmemd_free_vmas().
 */
struct vmas *etmemd_get_vmas(const char *pid, char **vmflags_array, int vmflags_num,
                             bool is_anon_only);
void etmemd_free_vmas(struct vmas *vmas);

/*
 * One scan pass over `vmas` through /proc/PID/idle_pages, merged into the address-sorted list
 * *page_refs. 0 on success; -1 on error (not initialised, bad arguments, or a kernel without
 * the etmem_scan module: errno is then ENOENT). Free with etmemd_free_page_refs().
 */
int etmemd_get_page_refs(const struct vmas *vmas, const char *pid, struct page_refs **page_refs,
                         int flags);
void etmemd_free_page_refs(struct page_refs *page_refs);

#endif /* ETMEMD_SCAN_EXP_H */
