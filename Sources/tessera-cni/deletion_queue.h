/* The deletion queue: a DEL the endpoint service could not take (it is down) is
 * written next to its socket, in <socket dir>/deletion-queue/, and DEL succeeds,
 * so the runtime can release the pod's addresses. tessera-endpointd deletes the
 * queued endpoints before it serves again (and keeps draining while it runs). */
#ifndef TESSERA_CNI_DELETION_QUEUE_H
#define TESSERA_CNI_DELETION_QUEUE_H

#include "cni_error.h"

/* Queues the deletion of (container_id, ifname) for the endpoint service listening
 * on socket_path; atomic (written then renamed). 0 on success, else fills err (CNI_ERR_IO). */
int deletion_queue_add(const char *socket_path, const char *container_id, const char *ifname, struct cni_error *err);

#endif
