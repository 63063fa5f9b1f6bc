/* The skeleton: env table, version checks, dispatch, and the error/VERSION output. */
#include <stdlib.h>
#include <unistd.h>

#include "skel.h"
#include "test.h"

struct fake_env {
  const char *names[8];
  const char *values[8];
};

static const char *fake_getenv(void *ctx, const char *name) {
  struct fake_env *e = ctx;
  for (int i = 0; i < 8 && e->names[i]; i++)
    if (strcmp(e->names[i], name) == 0) return e->values[i];
  return NULL;
}

static int stub_calls;
static struct cni_invocation last_inv_copy;
static int stub(struct cni_invocation *inv, struct cni_output *out, struct cni_error *err) {
  (void)out;
  (void)err;
  stub_calls++;
  last_inv_copy.env = inv->env;
  last_inv_copy.deadline_ms = inv->deadline_ms;
  return 0;
}

static const struct skel_command table[] = {
    {"ADD", cmd_add, SKEL_ENV_CONTAINERID | SKEL_ENV_NETNS | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"DEL", stub, SKEL_ENV_CONTAINERID | SKEL_ENV_IFNAME | SKEL_ENV_PATH, 0},
    {"STATUS", stub, 0, SKEL_MIN_1_1_0},
    {"VERSION", cmd_version, 0, SKEL_NO_CONF},
};

static int run(struct fake_env *env, const char *in, struct skel_outcome *o) {
  FILE *f = fmemopen((void *)in, strlen(in) ? strlen(in) : 1, "r");
  if (!strlen(in)) fgetc(f); /* fmemopen needs size > 0: consume the NUL */
  struct skel_io io = {.getenv = fake_getenv, .ctx = env, .in = f, .enable_log = 0};
  int rc = skel_run(table, sizeof(table) / sizeof(table[0]), &io, o);
  fclose(f);
  return rc;
}

#define CONF "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"tessera-cni\"}"

static void test_env_table(void) {
  struct skel_outcome o;
  struct fake_env none = {{NULL}, {NULL}};
  CHECK_INT(run(&none, CONF, &o), CNI_ERR_INVALID_ENV);
  skel_outcome_free(&o);

  struct fake_env unknown = {{"CNI_COMMAND"}, {"FROB"}};
  CHECK_INT(run(&unknown, CONF, &o), CNI_ERR_INVALID_ENV);
  CHECK_STR(o.err.msg, "unknown CNI_COMMAND");
  skel_outcome_free(&o);

  /* DEL without CNI_NETNS is fine; without CNI_CONTAINERID it is not. */
  stub_calls = 0;
  struct fake_env del = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"},
                         {"DEL", "c1", "eth0", "/opt/cni/bin", "K8S_POD_NAME=p"}};
  CHECK_INT(run(&del, CONF, &o), 0);
  CHECK_INT(stub_calls, 1);
  CHECK_STR(last_inv_copy.env.container_id, "c1");
  CHECK(last_inv_copy.env.netns == NULL);
  CHECK(o.out.text == NULL);
  skel_outcome_free(&o);

  struct fake_env del_missing = {{"CNI_COMMAND", "CNI_IFNAME", "CNI_CONTAINERID"}, {"DEL", "eth0", ""}};
  CHECK_INT(run(&del_missing, CONF, &o), CNI_ERR_INVALID_ENV);
  CHECK(strstr(o.err.details, "CNI_CONTAINERID") != NULL);
  CHECK(strstr(o.err.details, "CNI_PATH") != NULL);
  CHECK(strstr(o.err.details, "CNI_IFNAME") == NULL);
  skel_outcome_free(&o);

  struct fake_env bad_id = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
                            {"DEL", "-bad id", "eth0", "/"}};
  CHECK_INT(run(&bad_id, CONF, &o), CNI_ERR_INVALID_ENV);
  skel_outcome_free(&o);
  struct fake_env bad_if = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"}, {"DEL", "c", "a:b", "/"}};
  CHECK_INT(run(&bad_if, CONF, &o), CNI_ERR_INVALID_ENV);
  skel_outcome_free(&o);
  struct fake_env long_if = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
                             {"DEL", "c", "sixteencharsxxxx", "/"}};
  CHECK_INT(run(&long_if, CONF, &o), CNI_ERR_INVALID_ENV);
  skel_outcome_free(&o);
  struct fake_env bad_args = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH", "CNI_ARGS"},
                              {"DEL", "c", "eth0", "/", "novalue"}};
  CHECK_INT(run(&bad_args, CONF, &o), CNI_ERR_INVALID_ENV);
  skel_outcome_free(&o);
}

static void test_config_checks(void) {
  struct skel_outcome o;
  struct fake_env del = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"}, {"DEL", "c1", "eth0", "/"}};
  CHECK_INT(run(&del, "", &o), CNI_ERR_DECODING);
  CHECK_STR(o.cni_version, "1.1.0");
  skel_outcome_free(&o);
  CHECK_INT(run(&del, "{\"cniVersion\":\"0.4.0\",\"name\":\"n\"}", &o), CNI_ERR_INVALID_NETCONF);
  CHECK_STR(o.cni_version, "0.4.0"); /* errors are reported in the config's version */
  skel_outcome_free(&o);
  CHECK_INT(run(&del, "{\"cniVersion\":\"0.2.0\",\"name\":\"n\",\"type\":\"t\"}", &o), CNI_ERR_INCOMPATIBLE_VERSION);
  skel_outcome_free(&o);

  /* STATUS needs a 1.1.0 config. */
  struct fake_env status = {{"CNI_COMMAND"}, {"STATUS"}};
  CHECK_INT(run(&status, CONF, &o), CNI_ERR_INCOMPATIBLE_VERSION);
  skel_outcome_free(&o);
  stub_calls = 0;
  CHECK_INT(run(&status, "{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"t\",\"timeoutMs\":1234}", &o), 0);
  CHECK_INT(stub_calls, 1);
  skel_outcome_free(&o);
}

static void test_add_needs_prev_result_and_service(void) {
  struct skel_outcome o;
  struct fake_env add = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
                         {"ADD", "c1", "/var/run/netns/x", "eth0", "/"}};
  CHECK_INT(run(&add, CONF, &o), CNI_ERR_INVALID_NETCONF);
  CHECK_STR(o.err.msg, "missing prevResult");
  skel_outcome_free(&o);

  char conf[512];
  snprintf(conf, sizeof(conf),
           "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"socketPath\":\"/nonexistent/tsr-%d.sock\","
           "\"prevResult\":{\"interfaces\":[{\"name\":\"veth1\"}],\"ips\":[{\"address\":\"10.0.0.2/24\"}]}}",
           (int)getpid());
  /* Only a host-side interface in prevResult (the old rule attached to it, or to nothing and
   * said ready): refused before any call. */
  CHECK_INT(run(&add, conf, &o), TSR_ERR_NO_HOST_VETH);
  CHECK(o.out.text == NULL);
  CHECK(strstr(o.err.details, "no interfaces entry named eth0 with a sandbox") != NULL);
  skel_outcome_free(&o);

  /* The container interface is named, but its namespace does not exist: nothing to read the
   * veth peer from. */
  snprintf(conf, sizeof(conf),
           "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",\"socketPath\":\"/nonexistent/tsr-%d.sock\","
           "\"prevResult\":{\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"/var/run/netns/x\"}],"
           "\"ips\":[{\"address\":\"10.0.0.2/24\"}]}}",
           (int)getpid());
  struct fake_env add_gone = {{"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
                              {"ADD", "c1", "/nonexistent/netns/x", "eth0", "/"}};
  CHECK_INT(run(&add_gone, conf, &o), CNI_ERR_UNKNOWN_CONTAINER);
  CHECK(strstr(o.err.details, "/nonexistent/netns/x") != NULL);
  skel_outcome_free(&o);
}

static void test_version_output(void) {
  struct skel_outcome o;
  struct fake_env ver = {{"CNI_COMMAND"}, {"VERSION"}};
  CHECK_INT(run(&ver, "{\"cniVersion\":\"1.0.0\"}", &o), 0);
  json_t *r = json_loads(o.out.text ? o.out.text : "", 0, NULL);
  CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.0.0");
  json_t *sv = json_object_get(r, "supportedVersions");
  CHECK_INT(json_array_size(sv), 3);
  CHECK_STR(json_string_value(json_array_get(sv, 0)), "0.4.0");
  CHECK_STR(json_string_value(json_array_get(sv, 2)), "1.1.0");
  json_decref(r);
  skel_outcome_free(&o);
  /* Garbage, an unknown version, or nothing: still answers, in the newest version. */
  const char *inputs[] = {"", "not json", "{\"cniVersion\":\"0.1.0\"}", "[]"};
  for (size_t i = 0; i < 4; i++) {
    CHECK_INT(run(&ver, inputs[i], &o), 0);
    r = json_loads(o.out.text ? o.out.text : "", 0, NULL);
    CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.1.0");
    json_decref(r);
    skel_outcome_free(&o);
  }
}

static void test_error_json(void) {
  struct cni_error err;
  cni_error_set(&err, 11, "endpoint service unavailable", "connect %s: %s", "/run/x.sock", "refused");
  char *s = cni_error_to_json(&err, "1.0.0");
  json_t *r = json_loads(s, 0, NULL);
  CHECK(r != NULL);
  CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.0.0");
  CHECK_INT(json_integer_value(json_object_get(r, "code")), 11);
  CHECK_STR(json_string_value(json_object_get(r, "msg")), "endpoint service unavailable");
  CHECK_STR(json_string_value(json_object_get(r, "details")), "connect /run/x.sock: refused");
  CHECK(s[strlen(s) - 1] == '\n');
  json_decref(r);
  free(s);

  /* Invalid UTF-8 and quotes from a peer still give valid JSON; long text is truncated. */
  char big[4000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  big[10] = (char)0xff;
  big[11] = '"';
  cni_error_set(&err, 999, big, "%s", big);
  s = cni_error_to_json(&err, NULL);
  r = json_loads(s, 0, NULL);
  CHECK(r != NULL);
  CHECK_INT(strlen(json_string_value(json_object_get(r, "msg"))), CNI_ERROR_MSG_MAX - 1);
  CHECK_STR(json_string_value(json_object_get(r, "cniVersion")), "1.1.0");
  json_decref(r);
  free(s);
}

const struct test_case skel_tests[] = {
    {"env_table", test_env_table},
    {"config_checks", test_config_checks},
    {"add_needs_prev_result_and_service", test_add_needs_prev_result_and_service},
    {"version_output", test_version_output},
    {"error_json", test_error_json},
};
const size_t skel_tests_count = sizeof(skel_tests) / sizeof(skel_tests[0]);
