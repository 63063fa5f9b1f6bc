/* IPAM delegation (CNI spec, "Delegated plugins"): the main plugin executes the plugin named
 * by ipam.type from CNI_PATH with its own stdin and environment. */
#ifndef TESSERA_IPAM_H
#define TESSERA_IPAM_H

#include <jansson.h>
#include <stdint.h>

#include "cni_error.h"

#define IPAM_MAX_OUTPUT (1u << 20)

/* Runs ipam_type (found in the colon-separated cni_path) with CNI_COMMAND=command, the rest of
 * the environment inherited, and config on stdin, until deadline_ms (util_now_ms clock).
 * On success of ADD, *result holds its parsed result (caller json_decrefs); for other commands
 * result may be NULL. A failing plugin's error (code, msg, details) is passed on. */
int ipam_exec(const char *cni_path, const char *ipam_type, const char *command, const char *config, size_t config_len,
              int64_t deadline_ms, json_t **result, struct cni_error *err);

/* Finds name in the colon-separated path: writes the first executable match into out. */
int ipam_find_plugin(const char *cni_path, const char *name, char *out, size_t cap);

#endif
