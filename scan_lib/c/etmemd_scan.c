/*
 * libetmemd_scan.so - the page-scan helpers the original etmemd exported to C policies.
 *
 * Written from the ABI description (etmemd_scan_exp.h); semantics follow the original:
 * VMAs come from /proc/PID/maps (smaps when VmFlags are asked for), page references from one
 * pass over /proc/PID/idle_pages (openEuler's etmem_scan module). On kernels without that file
 * etmemd_get_page_refs() fails with errno ENOENT and says so on stderr.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "etmemd_scan_export.h"

#define PROC_ROOT_MAX 512
#define IDLE_SCAN_ADD_FLAGS 0x40046600u   /* _IOW(0x66, 0, unsigned int) */
#define KNOWN_SCAN_FLAGS (0x800u | 0x20000u | 0x40000u | SCAN_AS_HUGE | SCAN_IGN_HOST | \
                          0x04000000u | VMA_SCAN_FLAG)
#define READ_BUF_MIN 20                   /* smallest read the kernel scanner accepts, rounded */
#define IDLE_PTES_PER_PMD 512             /* the original hard-codes 512 for PMD_IDLE_PTES */

/* record types of the idle_pages byte stream (high nibble of each byte) */
enum idle_kind {
    K_PTE_ACCESSED = 0,
    K_PMD_ACCESSED,
    K_PUD_PRESENT,
    K_PTE_DIRTY,
    K_PMD_DIRTY,
    K_PTE_IDLE,
    K_PMD_IDLE,
    K_PMD_IDLE_PTES,
    K_PTE_HOLE,
    K_PMD_HOLE,
    K_PIP_CMD,
};
#define SET_HVA_BYTE 0xA0                 /* K_PIP_CMD << 4 | 0: an 8-byte big-endian address follows */

static const enum page_type kind_size[] = {
    PTE_TYPE, PMD_TYPE, PUD_TYPE, PTE_TYPE, PMD_TYPE, PTE_TYPE, PMD_TYPE, PMD_TYPE, PTE_TYPE, PMD_TYPE,
};

static int g_inited;
static uint64_t g_size[PAGE_TYPE_INVAL];  /* bytes of a PTE, PMD and PUD page */
static char g_proc_root[PROC_ROOT_MAX] = "/proc";

static void scan_log(const char *fmt, const char *arg)
{
    fprintf(stderr, "etmemd_scan: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
}

int etmemd_scan_init(void)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned shift = 0;

    if (g_inited) {
        scan_log("%s", "already initialised");
        return -1;
    }
    if (page <= 0)
        return -1;
    while ((1L << shift) < page)
        shift++;
    /* each table level holds page/8 entries: PMD = 2^((s-3)*2+3), PUD = 2^((s-3)*3+3) */
    g_size[PTE_TYPE] = 1ULL << shift;
    g_size[PMD_TYPE] = 1ULL << ((shift - 3) * 2 + 3);
    g_size[PUD_TYPE] = 1ULL << ((shift - 3) * 3 + 3);
    g_inited = 1;
    return 0;
}

void etmemd_scan_exit(void)
{
    g_inited = 0;
}

/* Extension of this implementation (not in the original ABI): read another /proc tree (tests). */
int etmemd_scan_set_proc_root(const char *root)
{
    if (root == NULL || strlen(root) >= sizeof(g_proc_root))
        return -1;
    strcpy(g_proc_root, root);
    return 0;
}

static int pid_valid(const char *pid)
{
    const char *p;

    if (*pid == '\0' || strlen(pid) > 10)
        return 0;
    for (p = pid; *p; p++)
        if (!isdigit((unsigned char)*p))
            return 0;
    return 1;
}

static FILE *open_proc(const char *pid, const char *name)
{
    char path[PROC_ROOT_MAX + 64];

    snprintf(path, sizeof(path), "%s/%s/%s", g_proc_root, pid, name);
    return fopen(path, "r");
}

void etmemd_free_vmas(struct vmas *vmas)
{
    struct vma *v;

    if (vmas == NULL)
        return;
    while ((v = vmas->vma_list) != NULL) {
        vmas->vma_list = v->next;
        free(v);
    }
    free(vmas);
}

static int parse_hex(const char *s, uint64_t *out, char stop)
{
    char *end = NULL;

    errno = 0;
    *out = strtoull(s, &end, 16);
    return errno == 0 && end != s && (*end == stop || (stop == ' ' && *end == '\0'));
}

/* A private mapping that is not executable counts when it is anonymous or writable. */
static int anon_like(const struct vma *v)
{
    if (v->stat[VMA_STAT_MAY_SHARE] || v->stat[VMA_STAT_EXEC])
        return 0;
    return v->inode == 0 || v->stat[VMA_STAT_WRITE];
}

/* Fill *v from one maps line (modified in place). 0 on success. */
static int parse_maps_line(char *line, struct vma *v)
{
    char *field[6] = {0};
    char *save = NULL;
    char *dash, *colon, *end;
    int n = 0;

    for (char *tok = strtok_r(line, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save))
        field[n++] = tok;
    if (n < 5)
        return -1;

    dash = strchr(field[0], '-');
    if (dash == NULL)
        return -1;
    *dash = '\0';
    if (!parse_hex(field[0], &v->start, '\0') || !parse_hex(dash + 1, &v->end, '\0'))
        return -1;

    if (strlen(field[1]) < 4)
        return -1;
    v->stat[VMA_STAT_READ] = field[1][0] == 'r';
    v->stat[VMA_STAT_WRITE] = field[1][1] == 'w';
    v->stat[VMA_STAT_EXEC] = field[1][2] == 'x';
    v->stat[VMA_STAT_MAY_SHARE] = field[1][3] != 'p';

    if (!parse_hex(field[2], &v->offset, '\0'))
        return -1;

    colon = strchr(field[3], ':');
    if (colon == NULL || colon - field[3] >= VMA_MAJOR_MINOR_LEN ||
        strlen(colon + 1) >= VMA_MAJOR_MINOR_LEN)
        return -1;
    memcpy(v->major, field[3], (size_t)(colon - field[3]));
    strcpy(v->minor, colon + 1);

    errno = 0;
    v->inode = strtoull(field[4], &end, 10);
    if (errno != 0 || end == field[4] || (*end != '\0' && *end != '\n'))
        return -1;

    /* the path keeps its newline, as the original's; an over-long one is left empty */
    if (field[5] != NULL && strlen(field[5]) < VMA_PATH_STR_LEN)
        strcpy(v->path, field[5]);
    return 0;
}

/* Read smaps lines up to this VMA's VmFlags line; true if every wanted flag is listed there. */
static int vmflags_match(FILE *fp, char **flags, int nflags, char **buf, size_t *cap)
{
    while (getline(buf, cap, fp) > 0) {
        char *colon;

        if (strncmp(*buf, "VmFlags:", 8) != 0)
            continue;
        colon = strchr(*buf, ':');
        for (int i = 0; i < nflags; i++)
            if (strstr(colon + 1, flags[i]) == NULL)
                return 0;
        return 1;
    }
    return 0;
}

struct vmas *etmemd_get_vmas(const char *pid, char **vmflags_array, int vmflags_num,
                             bool is_anon_only)
{
    struct vmas *out;
    struct vma **tail;
    char *line = NULL;
    size_t cap = 0;
    FILE *fp;

    if (pid == NULL || vmflags_num < 0 || (vmflags_num > 0 && vmflags_array == NULL))
        return NULL;
    for (int i = 0; i < vmflags_num; i++) {
        if (vmflags_array[i] == NULL || strchr(vmflags_array[i], ' ') != NULL ||
            strlen(vmflags_array[i]) != 2) {
            scan_log("invalid vm flag '%s' (two letters as in smaps VmFlags)",
                     vmflags_array[i] ? vmflags_array[i] : "(null)");
            return NULL;
        }
    }
    if (!pid_valid(pid)) {
        scan_log("invalid pid '%s'", pid);
        return NULL;
    }
    fp = open_proc(pid, vmflags_num > 0 ? "smaps" : "maps");
    if (fp == NULL) {
        scan_log("cannot open the maps of pid %s", pid);
        return NULL;
    }
    out = calloc(1, sizeof(*out));
    if (out == NULL) {
        fclose(fp);
        return NULL;
    }
    tail = &out->vma_list;
    while (getline(&line, &cap, fp) > 0) {
        struct vma *v = calloc(1, sizeof(*v));

        if (v == NULL || parse_maps_line(line, v) != 0) {
            free(v);
            etmemd_free_vmas(out);
            out = NULL;
            break;
        }
        if ((vmflags_num > 0 && !vmflags_match(fp, vmflags_array, vmflags_num, &line, &cap)) ||
            (is_anon_only && !anon_like(v))) {
            free(v);
            continue;
        }
        *tail = v;
        tail = &v->next;
        out->vma_cnt++;
    }
    free(line);
    fclose(fp);
    return out;
}

void etmemd_free_page_refs(struct page_refs *page_refs)
{
    while (page_refs != NULL) {
        struct page_refs *next = page_refs->next;

        free(page_refs);
        page_refs = next;
    }
}

/* Merge state of one pass: the list head and a cursor that moves forward with the addresses. */
struct merge {
    struct page_refs **head;
    struct page_refs **cursor;
};

static int merge_page(struct merge *m, uint64_t addr, int weight, enum page_type type)
{
    struct page_refs *node;

    if (*m->cursor != NULL && (*m->cursor)->addr > addr)
        m->cursor = m->head;    /* addresses went backwards: search from the start */
    while (*m->cursor != NULL && (*m->cursor)->addr < addr)
        m->cursor = &(*m->cursor)->next;
    if (*m->cursor != NULL && (*m->cursor)->addr == addr) {
        (*m->cursor)->count += weight;
        return 0;
    }
    node = calloc(1, sizeof(*node));
    if (node == NULL)
        return -1;
    node->addr = addr;
    node->count = weight;
    node->type = type;
    node->next = *m->cursor;
    *m->cursor = node;
    return 0;
}

static int kind_weight(int kind)
{
    if (kind >= K_PTE_IDLE)
        return 0;
    if (kind >= K_PTE_DIRTY)
        return 3;
    return 1;
}

/* n pages of `kind` from addr (already checked to be a page kind below K_PMD_IDLE_PTES). */
static int record(struct merge *m, uint64_t addr, int kind, int n)
{
    enum page_type type = kind_size[kind];
    uint64_t size = g_size[type];

    if (addr & (size - 1))
        return 0;               /* unaligned records are ignored, as in the original */
    for (int i = 0; i < n; i++, addr += size)
        if (merge_page(m, addr, kind_weight(kind), type) != 0)
            return -1;
    return 0;
}

/* Decode one read of idle_pages; *last_end gets the address after the last record. */
static int decode(const unsigned char *buf, size_t len, struct merge *m, uint64_t *last_end)
{
    uint64_t addr = 0;

    for (size_t i = 0; i < len; i++) {
        int kind = buf[i] >> 4;
        int n = buf[i] & 0x0f;

        if (buf[i] == SET_HVA_BYTE) {
            if (i + 8 >= len)
                break;
            addr = 0;
            for (int b = 1; b <= 8; b++)
                addr = (addr << 8) | buf[i + b];
            i += 8;
            continue;
        }
        if (addr == 0) {
            scan_log("%s", "idle_pages record before any address");
            return -1;
        }
        if (kind > K_PMD_HOLE)
            kind = K_PMD_HOLE;  /* unknown kinds: skip like a hole rather than read past tables */
        if (kind == K_PMD_IDLE_PTES) {
            if (record(m, addr, K_PTE_IDLE, n * IDLE_PTES_PER_PMD) != 0)
                return -1;
        } else if (kind < K_PMD_IDLE_PTES) {
            if (record(m, addr, kind, n) != 0)
                return -1;
        }
        addr += (uint64_t)n * g_size[kind_size[kind]];
    }
    *last_end = addr;
    return 0;
}

/* One lseek + one read covering [start, end): one byte per 8 base pages, at least 20 bytes. */
static int walk_range(int fd, uint64_t start, uint64_t end, struct merge *m, uint64_t *last_end)
{
    size_t len = (size_t)(((end - start) >> 3) / g_size[PTE_TYPE]);
    unsigned char *buf;
    ssize_t got;
    int ret = 0;

    if (len < READ_BUF_MIN)
        len = READ_BUF_MIN;
    buf = calloc(len, 1);
    if (buf == NULL)
        return -1;
    if (lseek(fd, (off_t)start, SEEK_SET) == (off_t)-1) {
        free(buf);
        return -1;
    }
    got = read(fd, buf, len);
    if (got > 0)
        ret = decode(buf, (size_t)got, m, last_end);
    free(buf);
    return ret;
}

int etmemd_get_page_refs(const struct vmas *vmas, const char *pid, struct page_refs **page_refs,
                         int flags)
{
    struct merge m;
    const struct vma *v;
    uint64_t last_end = 0;
    unsigned int scan_flags = (unsigned int)flags & KNOWN_SCAN_FLAGS;
    FILE *fp;
    int ret = 0;

    if (!g_inited) {
        scan_log("%s", "etmemd_scan_init() was not called");
        return -1;
    }
    if (vmas == NULL || pid == NULL || page_refs == NULL || !pid_valid(pid))
        return -1;
    fp = open_proc(pid, "idle_pages");
    if (fp == NULL) {
        int err = errno;

        if (err == ENOENT)
            scan_log("no /proc/%s/idle_pages: this kernel lacks the etmem_scan module", pid);
        else
            scan_log("cannot open /proc/%s/idle_pages", pid);
        errno = err;
        return -1;
    }
    if (scan_flags != 0 && ioctl(fileno(fp), IDLE_SCAN_ADD_FLAGS, &scan_flags) != 0) {
        scan_log("IDLE_SCAN_ADD_FLAGS failed on the idle_pages of pid %s", pid);
        fclose(fp);
        return -1;
    }
    m.head = page_refs;
    m.cursor = page_refs;
    v = vmas->vma_list;
    for (uint64_t i = 0; i < vmas->vma_cnt && v != NULL; i++, v = v->next) {
        uint64_t start = v->start;

        if (last_end > v->end)
            continue;
        if (last_end > start)
            start = last_end;
        if (start > v->end || walk_range(fileno(fp), start, v->end, &m, &last_end) != 0) {
            ret = -1;
            break;
        }
    }
    fclose(fp);
    return ret;
}
