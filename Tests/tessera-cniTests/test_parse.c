/* CNI_ARGS, network configuration, prevResult, label and named port parsing. */
#include <stdlib.h>

#include "cni_args.h"
#include "link.h"
#include "netconf.h"
#include "result.h"
#include "test.h"

static int parse(const char *json, struct netconf *nc, struct cni_error *err) {
  return netconf_parse(json, strlen(json), nc, err);
}

#define BASE "\"cniVersion\":\"1.0.0\",\"name\":\"tsr\",\"type\":\"tessera-cni\""
#define PTP_PREV                                                                                                       \
  "\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"veth9f2a\",\"mac\":\"aa:bb:cc:dd:ee:ff\"},"    \
  "{\"name\":\"eth0\",\"mac\":\"11:22:33:44:55:66\",\"sandbox\":\"/var/run/netns/p\"}],"                               \
  "\"ips\":[{\"address\":\"10.199.0.5/24\",\"gateway\":\"10.199.0.1\",\"interface\":1},"                               \
  "{\"address\":\"fd00:0:0::0005/64\",\"interface\":1}],\"dns\":{}}"

static void test_cni_args(void) {
  struct cni_args a;
  struct cni_error err;
  CHECK_INT(cni_args_parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1", &a, &err), 0);
  CHECK_STR(a.pod_namespace, "default");
  CHECK_STR(a.pod_name, "pod-1");
  cni_args_free(&a);

  CHECK_INT(cni_args_parse("K8S_POD_NAME=web", &a, &err), 0); /* podman: no namespace */
  CHECK(a.pod_namespace == NULL);
  CHECK_STR(a.pod_name, "web");
  cni_args_free(&a);

  CHECK_INT(cni_args_parse(NULL, &a, &err), 0);
  CHECK(a.pod_name == NULL && a.pod_namespace == NULL);
  CHECK_INT(cni_args_parse(";;K8S_POD_NAME=a;K8S_POD_NAME=b;", &a, &err), 0); /* last wins */
  CHECK_STR(a.pod_name, "b");
  cni_args_free(&a);
  CHECK_INT(cni_args_parse("K8S_POD_NAME=", &a, &err), 0);
  CHECK_STR(a.pod_name, "");
  cni_args_free(&a);
  CHECK_INT(cni_args_parse("K8S_POD_NAME=a=b", &a, &err), 0);
  CHECK_STR(a.pod_name, "a=b");
  cni_args_free(&a);

  CHECK_INT(cni_args_parse("K8S_POD_NAME=x;garbage", &a, &err), CNI_ERR_INVALID_ENV);
  CHECK(a.pod_name == NULL);
  CHECK_INT(cni_args_parse("=v", &a, &err), CNI_ERR_INVALID_ENV);
  CHECK_INT(cni_args_parse("K8S_POD_NAME=\xff\xfe", &a, &err), CNI_ERR_INVALID_ENV);
}

static void test_netconf_defaults(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse("{" BASE "}", &nc, &err), 0);
  CHECK_STR(nc.cni_version, "1.0.0");
  CHECK_STR(nc.name, "tsr");
  CHECK_STR(nc.socket_path, "/run/tessera/endpoint.sock");
  CHECK_INT(nc.timeout_ms, 10000);
  CHECK(nc.log_file == NULL);
  CHECK_INT(nc.log_level, LOG_LEVEL_INFO);
  netconf_free(&nc);

  CHECK_INT(parse("{" BASE ",\"socketPath\":\"/tmp/x.sock\",\"timeoutMs\":250,\"logFile\":\"/tmp/l\","
                  "\"logLevel\":\"debug\",\"unknownField\":[1,2,{}]}",
                  &nc, &err),
            0);
  CHECK_STR(nc.socket_path, "/tmp/x.sock");
  CHECK_INT(nc.timeout_ms, 250);
  CHECK_STR(nc.log_file, "/tmp/l");
  CHECK_INT(nc.log_level, LOG_LEVEL_DEBUG);
  netconf_free(&nc);
}

static void test_netconf_errors(void) {
  struct netconf nc;
  struct cni_error err;
  static const struct {
    const char *json;
    int code;
  } cases[] = {
      {"", CNI_ERR_DECODING},
      {"{", CNI_ERR_DECODING},
      {"[1]", CNI_ERR_DECODING},
      {"{" BASE "} trailing", CNI_ERR_DECODING},
      {"{\"cniVersion\":\"1.0.0\",\"name\":\"\xc3\x28\",\"type\":\"t\"}", CNI_ERR_DECODING}, /* invalid UTF-8 */
      {"{\"name\":\"n\",\"type\":\"t\"}", CNI_ERR_INVALID_NETCONF},
      {"{\"cniVersion\":1,\"name\":\"n\",\"type\":\"t\"}", CNI_ERR_INVALID_NETCONF},
      {"{\"cniVersion\":\"one\",\"name\":\"n\",\"type\":\"t\"}", CNI_ERR_INVALID_NETCONF},
      {"{\"cniVersion\":\"0.3.1\",\"name\":\"n\",\"type\":\"t\"}", CNI_ERR_INCOMPATIBLE_VERSION},
      {"{\"cniVersion\":\"2.0.0\",\"name\":\"n\",\"type\":\"t\"}", CNI_ERR_INCOMPATIBLE_VERSION},
      {"{\"cniVersion\":\"1.0.0\",\"type\":\"t\"}", CNI_ERR_INVALID_NETCONF},
      {"{\"cniVersion\":\"1.0.0\",\"name\":\"\",\"type\":\"t\"}", CNI_ERR_INVALID_NETCONF},
      {"{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"socketPath\":5}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"socketPath\":\"relative.sock\"}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"socketPath\":\"/"
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
       CNI_ERR_INVALID_NETCONF}, /* 108 bytes */
      {"{" BASE ",\"timeoutMs\":\"10\"}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"timeoutMs\":0}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"timeoutMs\":-5}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"timeoutMs\":1.5}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"timeoutMs\":99999999999}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"logFile\":true}", CNI_ERR_INVALID_NETCONF},
      {"{" BASE ",\"logLevel\":\"verbose\"}", CNI_ERR_INVALID_NETCONF},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = parse(cases[i].json, &nc, &err);
    if (rc != cases[i].code) fprintf(stderr, "  case %zu: %s\n", i, cases[i].json);
    CHECK_INT(rc, cases[i].code);
    CHECK_INT(err.code, cases[i].code);
    CHECK(err.msg[0] != '\0');
    netconf_free(&nc);
  }
  /* The error is reported in the config's version when that version is usable. */
  CHECK_INT(parse("{\"cniVersion\":\"0.4.0\",\"name\":\"n\",\"type\":\"t\",\"timeoutMs\":\"x\"}", &nc, &err), 7);
  CHECK_STR(nc.cni_version, "0.4.0");
  netconf_free(&nc);
  CHECK_INT(parse("{\"cniVersion\":\"9.9.9\",\"name\":\"n\",\"type\":\"t\"}", &nc, &err), 1);
  CHECK(nc.cni_version == NULL);
  netconf_free(&nc);
}

static void test_versions(void) {
  CHECK(netconf_version_supported("0.4.0"));
  CHECK(netconf_version_supported("1.0.0"));
  CHECK(netconf_version_supported("1.1.0"));
  CHECK(!netconf_version_supported("0.3.1"));
  CHECK(!netconf_version_supported(NULL));
  CHECK_INT(netconf_version_cmp("1.0.0", "1.1.0"), -1);
  CHECK_INT(netconf_version_cmp("1.10.0", "1.9.0"), 1);
  CHECK_INT(netconf_version_cmp("1.1.0", "1.1.0"), 0);
  CHECK_INT(netconf_version_cmp("1.1", "1.1.0"), -2);
  CHECK_INT(netconf_version_cmp("1.1.0-rc1", "1.1.0"), -2);
}

static void test_prev_result_ptp(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse("{" BASE "," PTP_PREV "}", &nc, &err), 0);
  CHECK_INT(netconf_parse_prev_result(&nc, &err), 0);
  CHECK_INT(netconf_find_container_interface(&nc, "eth0", &err), 0);
  CHECK_STR(nc.container_interface, "eth0");
  CHECK_INT(nc.n_ips, 2);
  if (nc.n_ips == 2) {
    CHECK_STR(nc.ips[0], "10.199.0.5");
    CHECK_STR(nc.ips[1], "fd00::5");
  }
  /* ADD's result: prevResult unchanged except cniVersion. */
  struct cni_output out = {0};
  CHECK_INT(result_passthrough(&nc, &out, &err), 0);
  json_t *r = json_loads(out.text, 0, NULL);
  json_t *prev = json_object_get(nc.root, "prevResult");
  CHECK(r != NULL);
  CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.0.0");
  CHECK(json_equal(json_object_get(r, "ips"), json_object_get(prev, "ips")));
  CHECK(json_equal(json_object_get(r, "interfaces"), json_object_get(prev, "interfaces")));
  CHECK(json_equal(json_object_get(r, "dns"), json_object_get(prev, "dns")));
  CHECK_INT(json_object_size(r), json_object_size(prev));
  json_decref(r);
  cni_output_free(&out);
  netconf_free(&nc);

  /* A 1.1.0 config over a prevResult stamped 1.0.0: the output carries the config's version. */
  CHECK_INT(parse("{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\"," PTP_PREV "}", &nc, &err), 0);
  CHECK_INT(netconf_parse_prev_result(&nc, &err), 0);
  CHECK_INT(result_passthrough(&nc, &out, &err), 0);
  r = json_loads(out.text, 0, NULL);
  CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.1.0");
  json_decref(r);
  cni_output_free(&out);
  netconf_free(&nc);
}

static void test_prev_result_errors(void) {
  struct netconf nc;
  struct cni_error err;
  static const char *const bad[] = {
      "{" BASE "}",
      "{" BASE ",\"prevResult\":[]}",
      "{" BASE ",\"prevResult\":{}}",
      "{" BASE ",\"prevResult\":{\"ips\":[]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/33\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.256/24\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"fd00::1/129\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":5}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[\"10.0.0.1/24\"]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/24\"}],\"interfaces\":{}}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/24\"}],\"interfaces\":[{\"name\":\"a/b\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/"
      "24\"}],\"interfaces\":[{\"name\":\"waytoolonginterfacename\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/24\"}],\"interfaces\":[{\"sandbox\":\"/x\"}]}}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_INT(parse(bad[i], &nc, &err), 0);
    int rc = netconf_parse_prev_result(&nc, &err);
    if (rc != CNI_ERR_INVALID_NETCONF) fprintf(stderr, "  case %zu: %s\n", i, bad[i]);
    CHECK_INT(rc, CNI_ERR_INVALID_NETCONF);
    netconf_free(&nc);
  }
  /* The container interface is found by name and sandbox, never by position: bridge lists
   * [bridge, host veth, eth0], and neither of the first two may be taken. */
  CHECK_INT(parse("{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1\"}],"
                  "\"interfaces\":[{\"name\":\"cni0\",\"mac\":\"aa:aa:aa:aa:aa:aa\"},{\"name\":\"veth1234\"},"
                  "{\"name\":\"eth0\",\"sandbox\":\"/n\"}]}}",
                  &nc, &err),
            0);
  CHECK_INT(netconf_parse_prev_result(&nc, &err), 0);
  CHECK_INT(netconf_find_container_interface(&nc, "eth0", &err), 0);
  CHECK_STR(nc.container_interface, "eth0");
  CHECK_STR(nc.ips[0], "10.0.0.1");
  /* Another CNI_IFNAME: no entry for it, so no host veth can be known. */
  CHECK_INT(netconf_find_container_interface(&nc, "net1", &err), TSR_ERR_NO_HOST_VETH);
  CHECK(nc.container_interface == NULL);
  netconf_free(&nc);
  /* Only host-side interfaces (a plugin that reports no sandbox), or none at all: ADD must fail
   * (the old positional rule took "vethB" here, or attached nothing and said ready). */
  static const char *const no_sandbox[] = {
      "{\"cniVersion\":\"0.4.0\",\"name\":\"n\",\"type\":\"t\",\"prevResult\":{\"cniVersion\":\"0.4.0\","
      "\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"\"},{\"name\":\"vethB\"}],"
      "\"ips\":[{\"version\":\"4\",\"address\":\"192.168.1.2/24\",\"interface\":0}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/24\"}]}}",
      "{" BASE ",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1/"
      "24\"}],\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":null}]}}",
  };
  for (size_t i = 0; i < sizeof(no_sandbox) / sizeof(no_sandbox[0]); i++) {
    CHECK_INT(parse(no_sandbox[i], &nc, &err), 0);
    CHECK_INT(netconf_parse_prev_result(&nc, &err), 0);
    CHECK_INT(netconf_find_container_interface(&nc, "eth0", &err), TSR_ERR_NO_HOST_VETH);
    CHECK(strstr(err.details, "no interfaces entry named eth0 with a sandbox") != NULL);
    netconf_free(&nc);
  }
}

static void test_main_plugin_config(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse("{" BASE ",\"mtu\":1400,\"ipam\":{\"type\":\"host-local\",\"subnet\":\"10.1.0.0/24\"}}", &nc, &err),
            0);
  CHECK(nc.ipam != NULL);
  CHECK_INT(nc.mtu, 1400);
  netconf_free(&nc);
  CHECK_INT(parse("{" BASE "}", &nc, &err), 0);
  CHECK(nc.ipam == NULL); /* chained */
  netconf_free(&nc);
  static const char *const bad[] = {
      "{" BASE ",\"ipam\":\"host-local\"}",
      "{" BASE ",\"ipam\":{}}",
      "{" BASE ",\"ipam\":{\"type\":\"\"}}",
      "{" BASE ",\"ipam\":{\"type\":\"../../bin/sh\"}}",
      "{" BASE ",\"ipam\":{\"type\":\"..\"}}",
      "{" BASE ",\"mtu\":\"1500\"}",
      "{" BASE ",\"mtu\":10}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = parse(bad[i], &nc, &err);
    if (rc != CNI_ERR_INVALID_NETCONF) fprintf(stderr, "  case %zu: %s\n", i, bad[i]);
    CHECK_INT(rc, CNI_ERR_INVALID_NETCONF);
    netconf_free(&nc);
  }
}

static void test_host_name(void) {
  char a[IF_NAMESIZE], b[IF_NAMESIZE], c[IF_NAMESIZE];
  link_host_name("0f3c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1", "eth0", a);
  link_host_name("0f3c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1", "eth0", b);
  link_host_name("0f3c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1", "net1", c);
  CHECK_INT(strlen(a), 15); /* IFNAMSIZ - 1 */
  CHECK(strncmp(a, "tsr", 3) == 0);
  CHECK_STR(a, b);          /* DEL finds it from its arguments alone */
  CHECK(strcmp(a, c) != 0); /* a second interface of the same container gets its own */
}

static void test_label_limits(void) {
  struct netconf nc;
  struct cni_error err;
  char *conf = malloc(64 * 1024);
  /* 512 labels pass, 513 are refused before any call is made. */
  for (int n = 512; n <= 513; n++) {
    int off = sprintf(conf, "{" BASE ",\"args\":{\"cni\":{\"labels\":{");
    for (int i = 0; i < n; i++) off += sprintf(conf + off, "%s\"k%d\":\"v\"", i ? "," : "", i);
    sprintf(conf + off, "}}}}");
    CHECK_INT(parse(conf, &nc, &err), 0);
    CHECK_INT(netconf_parse_labels(&nc, &err), 0);
    CHECK_INT(netconf_check_label_limits(&nc, &err), n == 512 ? 0 : CNI_ERR_INVALID_NETCONF);
    netconf_free(&nc);
  }
  static const struct {
    int source, key, value, ok;
  } sizes[] = {{63, 317, 253, 1}, {64, 1, 1, 0}, {1, 318, 1, 0}, {1, 1, 254, 0}};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    int off = sprintf(conf, "{" BASE ",\"args\":{\"cni\":{\"labels\":[{\"source\":\"");
    off += sprintf(conf + off, "%.*s\",\"key\":\"", sizes[i].source,
                   "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss");
    for (int k = 0; k < sizes[i].key; k++) conf[off++] = 'k';
    off += sprintf(conf + off, "\",\"value\":\"");
    for (int k = 0; k < sizes[i].value; k++) conf[off++] = 'v';
    sprintf(conf + off, "\"}]}}}");
    CHECK_INT(parse(conf, &nc, &err), 0);
    CHECK_INT(netconf_parse_labels(&nc, &err), 0);
    int rc = netconf_check_label_limits(&nc, &err);
    CHECK_INT(rc, sizes[i].ok ? 0 : CNI_ERR_INVALID_NETCONF);
    if (!sizes[i].ok) CHECK(strstr(err.details, "the endpoint service accepts at most") != NULL);
    netconf_free(&nc);
  }
  free(conf);
}

static void test_canonical_ip(void) {
  char buf[64];
  CHECK_INT(netconf_canonical_ip("10.1.2.3/32", buf, sizeof(buf)), 0);
  CHECK_STR(buf, "10.1.2.3");
  CHECK_INT(netconf_canonical_ip("FD00:0::1/128", buf, sizeof(buf)), 0);
  CHECK_STR(buf, "fd00::1");
  CHECK_INT(netconf_canonical_ip("::ffff:10.0.0.1/96", buf, sizeof(buf)), 0);
  CHECK_INT(netconf_canonical_ip("2001:db8::1", buf, sizeof(buf)), 0);
  CHECK_STR(buf, "2001:db8::1");
  CHECK(netconf_canonical_ip("", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("/24", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("10.0.0.1/-1", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("10.0.0.1/0024", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("10.0.0.1/24/1", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("10.0.0", buf, sizeof(buf)) != 0);
  CHECK(netconf_canonical_ip("fe80::1%eth0/64", buf, sizeof(buf)) != 0);
}

static void test_labels(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse("{" BASE ",\"args\":{\"cni\":{\"labels\":{\"app\":\"web\",\"k8s:tier\":\"db\"}}}}", &nc, &err), 0);
  CHECK_INT(netconf_parse_labels(&nc, &err), 0);
  CHECK_INT(nc.n_labels, 2);
  if (nc.n_labels == 2) {
    CHECK_STR(nc.labels[0].source, "");
    CHECK_STR(nc.labels[0].key, "app");
    CHECK_STR(nc.labels[0].value, "web");
    CHECK_STR(nc.labels[1].source, "k8s");
    CHECK_STR(nc.labels[1].key, "tier");
    CHECK_STR(nc.labels[1].value, "db");
  }
  netconf_free(&nc);

  CHECK_INT(parse("{" BASE ",\"args\":{\"cni\":{\"labels\":[\"k8s:app=web\",\"tier=db\",\"flag\","
                  "\"url=http://x:80/a=b\",{\"key\":\"team\",\"value\":\"net\"},"
                  "{\"source\":\"container\",\"key\":\"x\",\"value\":\"\\u00e9\"}]}}}",
                  &nc, &err),
            0);
  CHECK_INT(netconf_parse_labels(&nc, &err), 0);
  CHECK_INT(nc.n_labels, 6);
  if (nc.n_labels == 6) {
    CHECK_STR(nc.labels[0].source, "k8s");
    CHECK_STR(nc.labels[0].key, "app");
    CHECK_STR(nc.labels[0].value, "web");
    CHECK_STR(nc.labels[1].source, "");
    CHECK_STR(nc.labels[1].key, "tier");
    CHECK_STR(nc.labels[2].key, "flag");
    CHECK_STR(nc.labels[2].value, "");
    CHECK_STR(nc.labels[3].source, ""); /* ':' after '=' belongs to the value */
    CHECK_STR(nc.labels[3].key, "url");
    CHECK_STR(nc.labels[3].value, "http://x:80/a=b");
    CHECK_STR(nc.labels[4].key, "team");
    CHECK_STR(nc.labels[5].source, "container");
    CHECK_STR(nc.labels[5].value, "\xc3\xa9");
  }
  netconf_free(&nc);

  /* No args, or empty labels: none. */
  CHECK_INT(parse("{" BASE ",\"args\":{\"cni\":{}}}", &nc, &err), 0);
  CHECK_INT(netconf_parse_labels(&nc, &err), 0);
  CHECK_INT(nc.n_labels, 0);
  netconf_free(&nc);

  static const char *const bad[] = {
      "{" BASE ",\"args\":5}",
      "{" BASE ",\"args\":{\"cni\":[]}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":\"app=web\"}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":{\"app\":1}}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":{\"k8s:\":\"x\"}}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"ok=1\",7]}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"=value\"]}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"k8s:=value\"]}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":[{\"value\":\"v\"}]}}}",
      "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"a=b\",{\"key\":\"k\",\"value\":3}]}}}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_INT(parse(bad[i], &nc, &err), 0);
    int rc = netconf_parse_labels(&nc, &err);
    if (rc != CNI_ERR_INVALID_NETCONF) fprintf(stderr, "  case %zu: %s\n", i, bad[i]);
    CHECK_INT(rc, CNI_ERR_INVALID_NETCONF);
    netconf_free(&nc);
  }
}

#define PORTS(list) "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"app=web\"],\"ports\":" list "}}}"

static void test_ports(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse(PORTS("[{\"name\":\"http\",\"containerPort\":8080},"
                        "{\"name\":\"dns\",\"containerPort\":53,\"protocol\":\"UDP\"},"
                        "{\"containerPort\":2905,\"protocol\":\"SCTP\",\"name\":\"m3ua-1\"},"
                        "{\"name\":\"https\",\"containerPort\":65535,\"protocol\":\"TCP\"},"
                        "{\"name\":\"a1\",\"containerPort\":1,\"hostPort\":8081,\"hostIP\":\"0.0.0.0\"}]"),
                  &nc, &err),
            0);
  CHECK_INT(netconf_parse_labels(&nc, &err), 0);
  CHECK_INT(nc.n_labels, 1);
  CHECK_INT(netconf_parse_ports(&nc, &err), 0);
  CHECK_INT(nc.n_ports, 5);
  if (nc.n_ports == 5) {
    CHECK_STR(nc.ports[0].name, "http");
    CHECK_INT(nc.ports[0].protocol, NETCONF_PORT_TCP); /* the default */
    CHECK_INT(nc.ports[0].port, 8080);
    CHECK_STR(nc.ports[1].name, "dns");
    CHECK_INT(nc.ports[1].protocol, NETCONF_PORT_UDP);
    CHECK_INT(nc.ports[1].port, 53);
    CHECK_STR(nc.ports[2].name, "m3ua-1");
    CHECK_INT(nc.ports[2].protocol, NETCONF_PORT_SCTP);
    CHECK_INT(nc.ports[2].port, 2905);
    CHECK_STR(nc.ports[3].name, "https");
    CHECK_INT(nc.ports[3].protocol, NETCONF_PORT_TCP);
    CHECK_INT(nc.ports[3].port, 65535);
    CHECK_INT(nc.ports[4].port, 1); /* hostPort and hostIP ignored */
  }
  netconf_free(&nc);

  /* Absent (no args, no args.cni, no ports, null) or []: none. */
  static const char *const none[] = {
      "{" BASE "}", "{" BASE ",\"args\":{}}", "{" BASE ",\"args\":{\"cni\":{\"labels\":[\"app=web\"]}}}", PORTS("null"),
      PORTS("[]"),
  };
  for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
    CHECK_INT(parse(none[i], &nc, &err), 0);
    CHECK_INT(netconf_parse_ports(&nc, &err), 0);
    CHECK_INT(nc.n_ports, 0);
    CHECK(nc.ports == NULL);
    netconf_free(&nc);
  }

  /* Each invalid case gives code 7 with a message naming the entry. */
  static const struct {
    const char *conf, *details;
  } bad[] = {
      {"{" BASE ",\"args\":5}", "field args must be an object"},
      {"{" BASE ",\"args\":{\"cni\":[]}}", "field args.cni must be an object"},
      {PORTS("{\"http\":8080}"), "field args.cni.ports must be an array"},
      {PORTS("\"http\""), "field args.cni.ports must be an array"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80},\"dns\"]"), "args.cni.ports[1] must be an object"},
      {PORTS("[[]]"), "args.cni.ports[0] must be an object"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"hostPorts\":80}]"),
       "args.cni.ports[0]: unknown field \"hostPorts\"; expected name, containerPort and protocol (hostPort and "
       "hostIP are ignored)"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"Name\":\"x\"}]"), "args.cni.ports[0]: unknown field \"Name\""},
      {PORTS("[{\"containerPort\":80}]"), "args.cni.ports[0]: missing required field name"},
      {PORTS("[{\"name\":7,\"containerPort\":80}]"), "args.cni.ports[0]: name must be a string"},
      {PORTS("[{\"name\":null,\"containerPort\":80}]"), "args.cni.ports[0]: name must be a string"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80},{\"name\":\"HTTP\",\"containerPort\":81}]"),
       "args.cni.ports[1]: name \"HTTP\" must be an IANA service name: 1-15 characters of a-z, 0-9 and '-', with "
       "at least one letter, not beginning or ending with '-' and without \"--\""},
      {PORTS("[{\"name\":\"\",\"containerPort\":80}]"), "args.cni.ports[0]: name \"\" must be an IANA service name"},
      {PORTS("[{\"name\":\"abcdefghijklmnop\",\"containerPort\":80}]"),
       "args.cni.ports[0]: name \"abcdefghijklmnop\" must be an IANA service name"},
      {PORTS("[{\"name\":\"8080\",\"containerPort\":80}]"), "name \"8080\" must be an IANA service name"},
      {PORTS("[{\"name\":\"-http\",\"containerPort\":80}]"), "name \"-http\" must be an IANA service name"},
      {PORTS("[{\"name\":\"http-\",\"containerPort\":80}]"), "name \"http-\" must be an IANA service name"},
      {PORTS("[{\"name\":\"h--p\",\"containerPort\":80}]"), "name \"h--p\" must be an IANA service name"},
      {PORTS("[{\"name\":\"ht_p\",\"containerPort\":80}]"), "name \"ht_p\" must be an IANA service name"},
      {PORTS("[{\"name\":\"ht.p\",\"containerPort\":80}]"), "name \"ht.p\" must be an IANA service name"},
      {PORTS("[{\"name\":\"h\\u00e9\",\"containerPort\":80}]"), "must be an IANA service name"},
      {PORTS("[{\"name\":\"http\"}]"), "args.cni.ports[0] (http): missing required field containerPort"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":0}]"),
       "args.cni.ports[0] (http): containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":65536}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":-80}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80.0}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80.5}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":\"80\"}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":true}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":null}]"), "containerPort must be an integer between 1 and 65535"},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"protocol\":\"tcp\"}]"),
       "args.cni.ports[0] (http): protocol must be \"TCP\", \"UDP\" or \"SCTP\""},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"protocol\":\"ICMP\"}]"),
       "protocol must be \"TCP\", \"UDP\" or \"SCTP\""},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"protocol\":\"\"}]"),
       "protocol must be \"TCP\", \"UDP\" or \"SCTP\""},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"protocol\":6}]"),
       "protocol must be \"TCP\", \"UDP\" or \"SCTP\""},
      {PORTS("[{\"name\":\"http\",\"containerPort\":80,\"protocol\":null}]"),
       "protocol must be \"TCP\", \"UDP\" or \"SCTP\""},
      /* Names are unique, whatever the port and protocol. */
      {PORTS("[{\"name\":\"http\",\"containerPort\":80},{\"name\":\"dns\",\"containerPort\":53},"
             "{\"name\":\"http\",\"containerPort\":8080,\"protocol\":\"UDP\"}]"),
       "args.cni.ports[2]: name \"http\" is already used by args.cni.ports[0]"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_INT(parse(bad[i].conf, &nc, &err), 0);
    int rc = netconf_parse_ports(&nc, &err);
    int found = rc == CNI_ERR_INVALID_NETCONF && strstr(err.details, bad[i].details) != NULL;
    if (!found) fprintf(stderr, "  case %zu: %s: rc %d, details \"%s\"\n", i, bad[i].conf, rc, err.details);
    CHECK(found);
    netconf_free(&nc);
  }
}

static void test_port_limits(void) {
  struct netconf nc;
  struct cni_error err;
  char *conf = malloc(16 * 1024);
  /* 64 named ports pass, 65 are refused. */
  for (int n = NETCONF_MAX_PORTS; n <= NETCONF_MAX_PORTS + 1; n++) {
    int off = sprintf(conf, "{" BASE ",\"args\":{\"cni\":{\"ports\":[");
    for (int i = 0; i < n; i++)
      off += sprintf(conf + off, "%s{\"name\":\"p%d\",\"containerPort\":%d}", i ? "," : "", i, 1000 + i);
    sprintf(conf + off, "]}}}");
    CHECK_INT(parse(conf, &nc, &err), 0);
    int rc = netconf_parse_ports(&nc, &err);
    if (n == NETCONF_MAX_PORTS) {
      CHECK_INT(rc, 0);
      CHECK_INT(nc.n_ports, 64);
      if (nc.n_ports == 64) {
        CHECK_STR(nc.ports[63].name, "p63");
        CHECK_INT(nc.ports[63].port, 1063);
      }
    } else {
      CHECK_INT(rc, CNI_ERR_INVALID_NETCONF);
      CHECK_STR(err.details, "args.cni.ports has 65 entries; at most 64 are accepted");
      CHECK_INT(nc.n_ports, 0);
    }
    netconf_free(&nc);
  }
  free(conf);

  /* IANA service names as Kubernetes' IsValidPortName has them. */
  static const char *const good[] = {"a", "http", "h2c", "web-8080", "a-b-c", "123a", "abcdefghijklmno", "x-1"};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    CHECK_INT(netconf_port_name_valid(good[i], strlen(good[i])), 1);
  static const char *const bad[] = {"",      "1",   "123", "-a",  "a-", "a--b", "Http",
                                    "ht tp", "a_b", "a.b", "a/b", "-",  "--",   "abcdefghijklmnop"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (netconf_port_name_valid(bad[i], strlen(bad[i]))) fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
    CHECK_INT(netconf_port_name_valid(bad[i], strlen(bad[i])), 0);
  }
}

static void test_valid_attachments(void) {
  struct netconf nc;
  struct cni_error err;
  CHECK_INT(parse("{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"cni.dev/valid-attachments\":"
                  "[{\"containerID\":\"a\",\"ifname\":\"eth0\"},{\"containerID\":\"b\",\"ifname\":\"net1\"}]}",
                  &nc, &err),
            0);
  CHECK_INT(netconf_parse_valid_attachments(&nc, &err), 0);
  CHECK_INT(nc.n_attachments, 2);
  if (nc.n_attachments == 2) {
    CHECK_STR(nc.attachments[1].container_id, "b");
    CHECK_STR(nc.attachments[1].ifname, "net1");
  }
  netconf_free(&nc);
  CHECK_INT(
      parse("{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"cni.dev/valid-attachments\":[]}", &nc, &err), 0);
  CHECK_INT(netconf_parse_valid_attachments(&nc, &err), 0);
  CHECK_INT(nc.n_attachments, 0);
  netconf_free(&nc);
  static const char *const bad[] = {
      "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\"}",
      "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"cni.dev/valid-attachments\":{}}",
      "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"cni.dev/"
      "valid-attachments\":[{\"containerID\":\"a\"}]}",
      "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"cni.dev/valid-attachments\":[\"a\"]}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_INT(parse(bad[i], &nc, &err), 0);
    CHECK_INT(netconf_parse_valid_attachments(&nc, &err), CNI_ERR_INVALID_NETCONF);
    netconf_free(&nc);
  }
}

const struct test_case parse_tests[] = {
    {"cni_args", test_cni_args},
    {"netconf_defaults", test_netconf_defaults},
    {"netconf_errors", test_netconf_errors},
    {"versions", test_versions},
    {"prev_result_ptp", test_prev_result_ptp},
    {"prev_result_errors", test_prev_result_errors},
    {"main_plugin_config", test_main_plugin_config},
    {"host_name", test_host_name},
    {"label_limits", test_label_limits},
    {"canonical_ip", test_canonical_ip},
    {"labels", test_labels},
    {"ports", test_ports},
    {"port_limits", test_port_limits},
    {"valid_attachments", test_valid_attachments},
};
const size_t parse_tests_count = sizeof(parse_tests) / sizeof(parse_tests[0]);
