/* Runs every C unit test of tessera-cni and prints "N passed, N failed". */
#include <stdlib.h>

#include "test.h"

int test_failures;

static void run(const struct test_case *tests, size_t n, int *passed, int *failed) {
  for (size_t i = 0; i < n; i++) {
    test_failures = 0;
    tests[i].fn();
    if (test_failures) {
      fprintf(stderr, "FAIL %s\n", tests[i].name);
      (*failed)++;
    } else {
      (*passed)++;
    }
  }
}

int main(void) {
  int passed = 0, failed = 0;
  run(parse_tests, parse_tests_count, &passed, &failed);
  run(skel_tests, skel_tests_count, &passed, &failed);
  run(grpc_tests, grpc_tests_count, &passed, &failed);
  run(vector_tests, vector_tests_count, &passed, &failed);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
