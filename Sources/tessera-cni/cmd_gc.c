/* GC (1.1.0): remove every endpoint of this network (the configuration's name) not in
 * cni.dev/valid-attachments. In main-plugin mode also the veth tessera-cni made for each removed endpoint. */
#include <string.h>

#include "cmd_common.h"
#include "link.h"
#include "log.h"

struct gc_links {
  struct nl_sock *host;
  size_t deleted;
};

/* Only a veth whose name is the one ADD derives for this very attachment: GC never deletes
 * an interface another plugin made. */
static void delete_main_veth(void *ctx, const Tessera__Endpoint__V1__Endpoint *ep) {
  struct gc_links *g = ctx;
  char name[IF_NAMESIZE];
  struct cni_error ignored;
  link_host_name(ep->container_id, ep->interface_name, name);
  if (strcmp(name, ep->host_interface) != 0) return;
  if (link_delete(g->host, name, &ignored) == 0)
    g->deleted++;
  else
    log_debug("GC: %s", ignored.details);
}

int cmd_gc(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  struct netconf *nc = &inv->conf;
  int rc;
  if ((rc = netconf_parse_valid_attachments(nc, err))) return rc;
  struct gc_links g = {0};
  if (nc->ipam && (rc = link_open(NULL, &g.host, err))) return rc;
  struct endpoint_target t = cmd_target(inv);
  size_t removed = 0;
  rc = endpoint_gc(&t, nc->name, nc->attachments, nc->n_attachments, &removed, g.host ? delete_main_veth : NULL, &g,
                   err);
  link_close(g.host);
  if (rc) return rc;
  log_debug("GC valid=%zu removed=%zu veths=%zu", nc->n_attachments, removed, g.deleted);
  return 0;
}
