/* What a successful command writes on stdout: the ADD result and the VERSION answer. */
#ifndef TESSERA_RESULT_H
#define TESSERA_RESULT_H

#include "cni_error.h"
#include "netconf.h"

struct cni_output {
  char *text; /* malloc'd, newline-terminated; NULL when the command prints nothing */
};

void cni_output_free(struct cni_output *out);

/* The chained result: prevResult unchanged except cniVersion, set to the config's. */
int result_passthrough(const struct netconf *nc, struct cni_output *out, struct cni_error *err);

/* {"cniVersion": version, "supportedVersions": [...]} */
int result_version(const char *cni_version, struct cni_output *out, struct cni_error *err);

#endif
