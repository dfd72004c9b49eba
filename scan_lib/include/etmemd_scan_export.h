/*
 * etmemd_scan_export.h - what a policy using libetmemd_scan.so compiles against.
 *
 *   gcc -shared -fPIC -I<this dir> -o libmy_policy.so my_policy.c -L<lib dir> -letmemd_scan
 */
#ifndef ETMEMD_SCAN_EXPORT_H
#define ETMEMD_SCAN_EXPORT_H

#include "etmemd_exp.h"
#include "etmemd_scan_exp.h"

#endif /* ETMEMD_SCAN_EXPORT_H */
