/*
 * etmemd_keyfile.h - the GKeyFile type handed to fill_eng_params / fill_task_params.
 *
 * etmemd passes a real GKeyFile* built with the system libglib-2.0 (loaded process-wide), so a
 * policy may call any g_key_file_* function without linking glib itself. When <glib.h> is
 * available it is used; otherwise the few declarations a policy usually needs are given here with
 * glib's exact C types, so a policy also builds on hosts without the glib development headers.
 */
#ifndef ETMEMD_KEYFILE_H
#define ETMEMD_KEYFILE_H

#if defined(__has_include)
#if __has_include(<glib.h>)
#include <glib.h>
#define ETMEMD_HAVE_GLIB_H 1
#endif
#endif

#ifndef ETMEMD_HAVE_GLIB_H
#include <stdint.h>

typedef struct _GKeyFile GKeyFile;
typedef struct _GError GError;

/* gchar = char, gint = int, gboolean = int, gint64 = int64_t, gdouble = double, gsize = size_t. */
char *g_key_file_get_string(GKeyFile *key_file, const char *group_name, const char *key,
                            GError **error);
int g_key_file_get_integer(GKeyFile *key_file, const char *group_name, const char *key,
                           GError **error);
int64_t g_key_file_get_int64(GKeyFile *key_file, const char *group_name, const char *key,
                             GError **error);
int g_key_file_get_boolean(GKeyFile *key_file, const char *group_name, const char *key,
                           GError **error);
double g_key_file_get_double(GKeyFile *key_file, const char *group_name, const char *key,
                             GError **error);
int g_key_file_has_key(GKeyFile *key_file, const char *group_name, const char *key,
                       GError **error);
int g_key_file_has_group(GKeyFile *key_file, const char *group_name);
void g_error_free(GError *error);
void g_free(void *mem);
char *g_strdup(const char *str);
#endif

#endif /* ETMEMD_KEYFILE_H */
