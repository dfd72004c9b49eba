/*
 * etmemd_thirdparty_export.h - everything a thirdparty etmem policy (.so) compiles against.
 *
 *   gcc -shared -fPIC -O2 -I<this dir> -o libmy_policy.so my_policy.c [-letmemd_scan]
 */
#ifndef ETMEMD_THIRDPARTY_EXPORT_H
#define ETMEMD_THIRDPARTY_EXPORT_H

#include "etmemd_engine_exp.h"
#include "etmemd_project_exp.h"
#include "etmemd_task_exp.h"

#endif /* ETMEMD_THIRDPARTY_EXPORT_H */
