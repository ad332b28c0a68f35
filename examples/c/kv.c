/*
 * kv.c: connect, put, get, compare-and-swap, a multi-get, a counter with a floor, a value with
 * a TTL, delete through cradle's C ABI.
 *
 *   cc -Wall -Wextra -Werror -o kv examples/c/kv.c -Icapi/include \
 *       target/release/libcradle.a -lpthread -ldl -lm
 *   ./kv 127.0.0.1:7000
 *
 * Prints what it did and "kv: ok" and exits 0 when every step behaved; otherwise says which
 * step failed and exits 1.
 */
#define _POSIX_C_SOURCE 199309L /* nanosleep */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cradle.h"

static int fail(const char *step, int32_t status) {
    char message[256];
    cradle_last_error(message, sizeof message);
    fprintf(stderr, "kv: %s: %s (%s)\n", step, cradle_status_name(status), message);
    return 1;
}

#define KEY(s) (const uint8_t *)(s), strlen(s)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s HOST:PORT[,HOST:PORT...]\n", argv[0]);
        return 2;
    }
    cradle_client *client = NULL;
    int32_t status = cradle_connect(argv[1], 2000, &client);
    if (status != CRADLE_OK) return fail("connect", status);

    const char *greeting = "hello from C";
    uint64_t version = 0;
    status = cradle_put(client, KEY("c:greeting"), (const uint8_t *)greeting, strlen(greeting),
                        &version);
    if (status != CRADLE_OK) return fail("put", status);
    printf("put c:greeting -> version %llu\n", (unsigned long long)version);

    /* Too small a buffer first: the call says how large it must be. */
    uint8_t small[4];
    size_t len = 0;
    status = cradle_get(client, KEY("c:greeting"), small, sizeof small, &len, NULL);
    if (status != CRADLE_BUFFER_TOO_SMALL || len != strlen(greeting))
        return fail("get into a 4-byte buffer", status);

    uint8_t buf[64];
    uint64_t got_version = 0;
    status = cradle_get(client, KEY("c:greeting"), buf, sizeof buf, &len, &got_version);
    if (status != CRADLE_OK) return fail("get", status);
    if (len != strlen(greeting) || memcmp(buf, greeting, len) != 0 || got_version != version) {
        fprintf(stderr, "kv: get returned %zu other bytes (version %llu)\n", len,
                (unsigned long long)got_version);
        return 1;
    }
    printf("get c:greeting -> \"%.*s\" (version %llu)\n", (int)len, (const char *)buf,
           (unsigned long long)got_version);

    uint64_t seen = 0;
    status = cradle_cas(client, KEY("c:greeting"), version + 1000, (const uint8_t *)"x", 1, &seen);
    if (status != CRADLE_VERSION_MISMATCH || seen != version)
        return fail("cas with a stale version", status);
    status = cradle_cas(client, KEY("c:greeting"), version, (const uint8_t *)"bye", 3, &seen);
    if (status != CRADLE_OK || seen <= version) return fail("cas", status);
    printf("cas c:greeting %llu -> version %llu\n", (unsigned long long)version,
           (unsigned long long)seen);

    /* Three keys in one round trip: two written, one never. */
    const char *many[3] = {"c:greeting", "c:absent", "c:other"};
    size_t many_lens[3];
    for (int i = 0; i < 3; i++) many_lens[i] = strlen(many[i]);
    status = cradle_put(client, KEY("c:other"), (const uint8_t *)"42", 2, NULL);
    if (status != CRADLE_OK) return fail("put c:other", status);
    cradle_value results[3];
    status = cradle_get_many(client, 3, (const uint8_t *const *)many, many_lens, buf, sizeof buf,
                             results);
    if (status != CRADLE_OK) return fail("get_many", status);
    if (results[0].status != CRADLE_OK || results[0].len != 3 ||
        memcmp(buf + results[0].offset, "bye", 3) != 0 || results[1].status != CRADLE_NOT_FOUND ||
        results[2].status != CRADLE_OK || results[2].len != 2 ||
        memcmp(buf + results[2].offset, "42", 2) != 0) {
        fprintf(stderr, "kv: get_many returned other results\n");
        return 1;
    }
    printf("get_many c:greeting c:absent c:other -> \"%.*s\", absent, \"%.*s\"\n",
           (int)results[0].len, (const char *)buf + results[0].offset, (int)results[2].len,
           (const char *)buf + results[2].offset);

    status = cradle_delete(client, KEY("c:greeting"));
    if (status != CRADLE_OK) return fail("delete", status);
    status = cradle_delete(client, KEY("c:greeting"));
    if (status != CRADLE_NOT_FOUND) return fail("delete again", status);
    status = cradle_get(client, KEY("c:greeting"), buf, sizeof buf, &len, NULL);
    if (status != CRADLE_NOT_FOUND) return fail("get after delete", status);
    printf("delete c:greeting -> gone\n");

    /* A budget of 5 that never goes below 0: 3 + 2 taken, the next 1 refused. */
    int64_t count = 0;
    status = cradle_incr(client, KEY("c:budget"), 5, false, 0, &count);
    if (status != CRADLE_OK || count != 5) return fail("incr by 5", status);
    status = cradle_incr(client, KEY("c:budget"), -3, true, 0, &count);
    if (status != CRADLE_OK || count != 2) return fail("incr by -3", status);
    status = cradle_incr(client, KEY("c:budget"), -2, true, 0, &count);
    if (status != CRADLE_OK || count != 0) return fail("incr by -2", status);
    status = cradle_incr(client, KEY("c:budget"), -1, true, 0, &count);
    if (status != CRADLE_BELOW_FLOOR || count != 0) return fail("incr below the floor", status);
    printf("incr c:budget 5, -3, -2 -> 0; -1 -> below the floor\n");

    /* A value that lives one second. */
    status = cradle_put_ttl(client, KEY("c:brief"), (const uint8_t *)"x", 1, 1, NULL);
    if (status != CRADLE_OK) return fail("put_ttl", status);
    status = cradle_get(client, KEY("c:brief"), buf, sizeof buf, &len, NULL);
    if (status != CRADLE_OK) return fail("get before the expiry", status);
    struct timespec wait = {1, 200000000};
    nanosleep(&wait, NULL);
    status = cradle_get(client, KEY("c:brief"), buf, sizeof buf, &len, NULL);
    if (status != CRADLE_NOT_FOUND) return fail("get after the expiry", status);
    printf("put_ttl c:brief 1 s -> read, then gone\n");

    char long_key[300];
    memset(long_key, 'k', sizeof long_key);
    status = cradle_put(client, (const uint8_t *)long_key, sizeof long_key, NULL, 0, NULL);
    if (status != CRADLE_KEY_TOO_LONG) return fail("put with a 300-byte key", status);

    cradle_close(client);
    printf("kv: ok\n");
    return 0;
}
