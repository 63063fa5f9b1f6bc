/* A minimal test harness: TEST functions, CHECK assertions, "N passed, N failed". */
#ifndef TESSERA_CNI_TEST_H
#define TESSERA_CNI_TEST_H

#include <stdio.h>
#include <string.h>

extern int test_failures; /* failures in the running test */

#define CHECK(cond)                                                                                                    \
  do {                                                                                                                 \
    if (!(cond)) {                                                                                                     \
      fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                                \
      test_failures++;                                                                                                 \
    }                                                                                                                  \
  } while (0)

#define CHECK_INT(a, b)                                                                                                \
  do {                                                                                                                 \
    long long _a = (long long)(a), _b = (long long)(b);                                                                \
    if (_a != _b) {                                                                                                    \
      fprintf(stderr, "  FAIL %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b);                    \
      test_failures++;                                                                                                 \
    }                                                                                                                  \
  } while (0)

#define CHECK_STR(a, b)                                                                                                \
  do {                                                                                                                 \
    const char *_a = (a), *_b = (b);                                                                                   \
    if (!_a || !_b || strcmp(_a, _b) != 0) {                                                                           \
      fprintf(stderr, "  FAIL %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, _a ? _a : "(null)",     \
              _b ? _b : "(null)");                                                                                     \
      test_failures++;                                                                                                 \
    }                                                                                                                  \
  } while (0)

typedef void (*test_fn)(void);
struct test_case {
  const char *name;
  test_fn fn;
};

/* Each test file exports its table. */
extern const struct test_case parse_tests[];
extern const size_t parse_tests_count;
extern const struct test_case skel_tests[];
extern const size_t skel_tests_count;
extern const struct test_case grpc_tests[];
extern const size_t grpc_tests_count;
extern const struct test_case vector_tests[];
extern const size_t vector_tests_count;

#endif
