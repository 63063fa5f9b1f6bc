/* See deletion_queue.h. One file per attachment, named after it, holding
 * {"containerId": ..., "interfaceName": ...}; a repeated DEL rewrites the same file. */
#include "deletion_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Container ids and interface names are checked by the CNI layer, but the file name
 * must never leave the directory: anything but [A-Za-z0-9._-] becomes '_'. */
static void file_safe(char *s) {
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
          c == '_'))
      *s = '_';
  }
}

int deletion_queue_add(const char *socket_path, const char *container_id, const char *ifname, struct cni_error *err) {
  char dir[PATH_MAX], name[256], path[PATH_MAX], tmp[PATH_MAX];
  util_strlcpy(dir, socket_path, sizeof(dir));
  char *slash = strrchr(dir, '/');
  if (!slash)
    return cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "socket path %s has no directory", socket_path);
  if ((size_t)snprintf(slash, sizeof(dir) - (size_t)(slash - dir), "/deletion-queue") >=
      sizeof(dir) - (size_t)(slash - dir))
    return cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "path too long");
  if (mkdir(dir, 0700) && errno != EEXIST)
    return cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "mkdir %s: %s", dir, strerror(errno));

  char id_part[151], if_part[33];
  util_strlcpy(id_part, container_id, sizeof(id_part));
  util_strlcpy(if_part, ifname, sizeof(if_part));
  file_safe(id_part);
  file_safe(if_part);
  snprintf(name, sizeof(name), "%s@%s.json", id_part, if_part);
  if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
      (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.%ld", dir, name, (long)getpid()) >= sizeof(tmp))
    return cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "path too long");

  json_t *entry = json_pack("{s:s, s:s}", "containerId", container_id, "interfaceName", ifname);
  char *text = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
  json_decref(entry);
  if (!text) return cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "out of memory");

  int rc = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  size_t len = strlen(text);
  if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
    rc = cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "writing %s: %s", tmp, strerror(errno));
  } else if (rename(tmp, path) != 0) {
    rc = cni_error_set(err, CNI_ERR_IO, "cannot queue the deletion", "renaming to %s: %s", path, strerror(errno));
  }
  if (fd >= 0) close(fd);
  if (rc) unlink(tmp);
  free(text);
  return rc;
}
