/*
 * Linked with -letmemd_scan: eng_mgt_func("vmas PID") answers the VMA count of PID,
 * eng_mgt_func("refs PID") the result of one page-refs pass (fails on kernels without idle_pages).
 * "vmas_PID" is the same as "vmas PID", for the etmem client (a request carries no spaces).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "etmemd_scan_export.h"
#include "etmemd_thirdparty_export.h"

static int start(struct engine *eng, struct task *tk)
{
    (void)eng;
    (void)tk;
    return 0;
}

static int mgt(struct engine *eng, struct task *tk, char *cmd, int fd)
{
    char buf[256];
    int n;

    (void)eng;
    (void)tk;
    etmemd_scan_init(); /* -1 when an earlier caller already did it */
    if (strncmp(cmd, "vmas", 4) == 0 && (cmd[4] == ' ' || cmd[4] == '_')) {
        struct vmas *vmas = etmemd_get_vmas(cmd + 5, NULL, 0, false);

        if (vmas == NULL)
            return -1;
        n = snprintf(buf, sizeof(buf), "vmas=%llu\n", (unsigned long long)vmas->vma_cnt);
        etmemd_free_vmas(vmas);
    } else if (strncmp(cmd, "refs ", 5) == 0) {
        struct vmas *vmas = etmemd_get_vmas(cmd + 5, NULL, 0, true);
        struct page_refs *refs = NULL;
        int ret;

        if (vmas == NULL)
            return -1;
        errno = 0;
        ret = etmemd_get_page_refs(vmas, cmd + 5, &refs, 0);
        n = snprintf(buf, sizeof(buf), "refs=%d errno=%d\n", ret, ret ? errno : 0);
        etmemd_free_page_refs(refs);
        etmemd_free_vmas(vmas);
    } else {
        return -1;
    }
    return write(fd, buf, (size_t)n) == n ? 0 : -1;
}

struct engine_ops scan_ops = {
    .start_task = start,
    .eng_mgt_func = mgt,
};
