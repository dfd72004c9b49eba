/*
 * etmemd_exp.h - common definitions for etmem C policies and the scan library.
 *
 * Written for the Python etmem project; binary compatible with the openEuler etmemd ABI (x86_64,
 * aarch64: LP64). Vendors include etmemd_thirdparty_export.h or etmemd_scan_export.h instead.
 */
#ifndef ETMEMD_EXP_H
#define ETMEMD_EXP_H

#include <stdbool.h>
#include <stdint.h>

/* Maximum length of a project, engine or task name (longer names are refused at obj add). */
#define ETMEMD_MAX_OBJ_NAME_LEN 64

#endif /* ETMEMD_EXP_H */
