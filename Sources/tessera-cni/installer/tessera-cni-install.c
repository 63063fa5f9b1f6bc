// tessera-cni-install: the node-agent image's installer entrypoint. It copies the
// CNI plugin and its conflist from the image onto the host (the DaemonSet's init
// container mounts the host's /opt/cni/bin and /etc/cni/net.d under /host).
//
//   tessera-cni-install [--plugin FILE] [--conflist FILE] [--bin-dir DIR] [--conf-dir DIR] [--no-conf]
//
// Each file is written to a temporary name in the target directory, synced, and
// renamed over the old one: a runtime executing the plugin while it is replaced
// runs either the old binary or the new one, never a half-written file. The image
// is FROM scratch (no shell, no cp), hence this small static program.
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_file(const char *source, const char *dir, mode_t mode) {
  char name_buffer[4096];
  snprintf(name_buffer, sizeof name_buffer, "%s", source);
  const char *name = basename(name_buffer);
  char target[4096], temporary[4096];
  if (snprintf(target, sizeof target, "%s/%s", dir, name) >= (int)sizeof target) return -1;
  if (snprintf(temporary, sizeof temporary, "%s/.%s.tmp.%d", dir, name, (int)getpid()) >= (int)sizeof temporary)
    return -1;

  int in = open(source, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    fprintf(stderr, "tessera-cni-install: cannot open %s: %s\n", source, strerror(errno));
    return -1;
  }
  int out = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    fprintf(stderr, "tessera-cni-install: cannot create %s: %s\n", temporary, strerror(errno));
    close(in);
    return -1;
  }
  char buffer[65536];
  ssize_t n;
  int failed = 0;
  while ((n = read(in, buffer, sizeof buffer)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      failed = 1;
      break;
    }
    for (ssize_t written = 0; written < n;) {
      ssize_t w = write(out, buffer + written, (size_t)(n - written));
      if (w < 0) {
        if (errno == EINTR) continue;
        failed = 1;
        break;
      }
      written += w;
    }
    if (failed) break;
  }
  if (!failed && (fchmod(out, mode) != 0 || fsync(out) != 0)) failed = 1;
  if (close(out) != 0) failed = 1;
  close(in);
  if (failed || rename(temporary, target) != 0) {
    fprintf(stderr, "tessera-cni-install: cannot install %s: %s\n", target, strerror(errno));
    unlink(temporary);
    return -1;
  }
  printf("tessera-cni-install: installed %s\n", target);
  return 0;
}

static int ensure_dir(const char *dir) {
  struct stat st;
  if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
  fprintf(stderr, "tessera-cni-install: %s is not a directory (mount the host's directory there)\n", dir);
  return -1;
}

int main(int argc, char **argv) {
  const char *plugin = "/usr/lib/tessera/cni/tessera-cni";
  const char *conflist = "/usr/lib/tessera/cni/10-tessera.conflist";
  const char *bin_dir = "/host/opt/cni/bin";
  const char *conf_dir = "/host/etc/cni/net.d";
  int install_conf = 1;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char **value = NULL;
    if (strcmp(arg, "--plugin") == 0)
      value = &plugin;
    else if (strcmp(arg, "--conflist") == 0)
      value = &conflist;
    else if (strcmp(arg, "--bin-dir") == 0)
      value = &bin_dir;
    else if (strcmp(arg, "--conf-dir") == 0)
      value = &conf_dir;
    else if (strcmp(arg, "--no-conf") == 0) {
      install_conf = 0;
      continue;
    } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      printf("usage: tessera-cni-install [--plugin FILE] [--conflist FILE] [--bin-dir DIR] [--conf-dir DIR] "
             "[--no-conf]\n  defaults: %s, %s, %s, %s\n",
             plugin, conflist, bin_dir, conf_dir);
      return 0;
    } else {
      fprintf(stderr, "tessera-cni-install: unknown argument '%s' (see --help)\n", arg);
      return 2;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "tessera-cni-install: %s needs a value\n", arg);
      return 2;
    }
    *value = argv[++i];
  }
  if (ensure_dir(bin_dir) != 0 || copy_file(plugin, bin_dir, 0755) != 0) return 1;
  if (install_conf && (ensure_dir(conf_dir) != 0 || copy_file(conflist, conf_dir, 0644) != 0)) return 1;
  return 0;
}
