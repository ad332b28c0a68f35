/*
 * cradle.h: the C ABI of the cradle client (libcradle.so / libcradle.a, crate `capi/`).
 *
 * One opaque handle, blocking calls, a status code from every call. A handle may be used
 * by several threads at once (its requests share one socket and one driver thread); only
 * cradle_close must not race with other calls on it. Writes are exactly-once: a call that
 * failed with CRADLE_TIMEOUT, CRADLE_DEADLINE_EXCEEDED or CRADLE_CANCELLED may still have
 * been applied, once. Nothing panics across this boundary (a bug is CRADLE_INTERNAL).
 *
 * Link: cc app.c -Icapi/include -Ltarget/release -lcradle
 *   (static: target/release/libcradle.a -lpthread -ldl -lm)
 */
#ifndef CRADLE_H
#define CRADLE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: answers (0-3), failures (10 and up). Same numbers as capi/src/status.rs. */
enum cradle_status {
    CRADLE_OK = 0,                /* done: written, found, deleted, swapped */
    CRADLE_NOT_FOUND = 1,         /* GET, DELETE: no such key (an answer) */
    CRADLE_VERSION_MISMATCH = 2,  /* CAS: another version (an answer) */
    CRADLE_BUFFER_TOO_SMALL = 3,  /* GET: *value_len says how large a buffer it takes */
    CRADLE_BELOW_FLOOR = 4,       /* INCR: the count would go below the floor (an answer) */
    CRADLE_TIMEOUT = 10,          /* no answer within the retry budget of every server */
    CRADLE_DEADLINE_EXCEEDED = 11,/* the call's timeout (call_timeout_ms) passed first */
    CRADLE_IN_FLIGHT_FULL = 12,   /* too many requests in flight on this handle; not sent */
    CRADLE_CANCELLED = 13,        /* the handle was closed under the call */
    CRADLE_REFUSED = 14,          /* the server refused it (busy, no space, ...) */
    CRADLE_TOO_LARGE = 15,        /* a value over 16 MiB */
    CRADLE_KEY_TOO_LONG = 16,     /* a key over 250 bytes; not sent */
    CRADLE_INVALID_ARGUMENT = 20, /* a NULL pointer, an unparsable server list */
    CRADLE_IO = 21,               /* the socket failed */
    CRADLE_BAD_REPLY = 22,        /* a reply that could not be understood */
    CRADLE_INTERNAL = 99          /* a bug in cradle, caught at the boundary */
};

/* A connected client. */
typedef struct CradleClient cradle_client;

/* Connects to `servers` ("host:port", several separated by commas, tried in order), fetches
 * the partition map, and writes the handle to *out. `call_timeout_ms` bounds every later
 * call on it (0: the retry budget alone, about 1 s per server). */
int32_t cradle_connect(const char *servers, uint32_t call_timeout_ms, cradle_client **out);

/* Closes the handle (NULL: nothing). */
void cradle_close(cradle_client *client);

/* Writes value under key; the new version to *version (may be NULL). */
int32_t cradle_put(const cradle_client *client, const uint8_t *key, size_t key_len,
                   const uint8_t *value, size_t value_len, uint64_t *version);

/* Reads key into buf (buf_cap bytes): CRADLE_OK, CRADLE_NOT_FOUND, or
 * CRADLE_BUFFER_TOO_SMALL (nothing copied). *value_len and *version (each may be NULL) get
 * the value's length and version whenever the key exists. */
int32_t cradle_get(const cradle_client *client, const uint8_t *key, size_t key_len,
                   uint8_t *buf, size_t buf_cap, size_t *value_len, uint64_t *version);

/* One key's result of cradle_get_many. */
typedef struct cradle_value {
    int32_t status;   /* CRADLE_OK, CRADLE_NOT_FOUND, CRADLE_BUFFER_TOO_SMALL, or a failure */
    size_t offset;    /* CRADLE_OK: where in buf the value starts */
    size_t len;       /* CRADLE_OK, CRADLE_BUFFER_TOO_SMALL: the value's length */
    uint64_t version; /* CRADLE_OK, CRADLE_BUFFER_TOO_SMALL: the value's version */
} cradle_value;

/* Reads count keys at once, packed into shared datagrams (16 small keys travel in one):
 * results[i] is key i's result; the values found are copied into buf one after another.
 * Returns CRADLE_OK when every key was answered (found or not), else the first other status
 * in results; CRADLE_IN_FLIGHT_FULL or CRADLE_KEY_TOO_LONG (results untouched) when none
 * could be sent. */
int32_t cradle_get_many(const cradle_client *client, size_t count, const uint8_t *const *keys,
                        const size_t *key_lens, uint8_t *buf, size_t buf_cap,
                        cradle_value *results);

/* cradle_put of a value that lives ttl_secs seconds (0: for good). */
int32_t cradle_put_ttl(const cradle_client *client, const uint8_t *key, size_t key_len,
                       const uint8_t *value, size_t value_len, uint32_t ttl_secs,
                       uint64_t *version);

/* Adds by (negative: subtracts) to the count key holds (absent: 0), exactly once: CRADLE_OK
 * with the new count in *count; with has_floor, CRADLE_BELOW_FLOOR when the count would go
 * below floor (nothing written, the current count in *count). *count may be NULL. */
int32_t cradle_incr(const cradle_client *client, const uint8_t *key, size_t key_len, int64_t by,
                    bool has_floor, int64_t floor, int64_t *count);

/* Removes key: CRADLE_OK if it existed, CRADLE_NOT_FOUND if not. */
int32_t cradle_delete(const cradle_client *client, const uint8_t *key, size_t key_len);

/* Writes value under key if its version is expected_version (0: only if absent):
 * CRADLE_OK with the new version in *version, or CRADLE_VERSION_MISMATCH with the current
 * version (0: absent) in *version (may be NULL). */
int32_t cradle_cas(const cradle_client *client, const uint8_t *key, size_t key_len,
                   uint64_t expected_version, const uint8_t *value, size_t value_len,
                   uint64_t *version);

/* The calling thread's last error message, NUL-terminated in buf (truncated to buf_cap - 1
 * bytes); returns its full length. */
size_t cradle_last_error(char *buf, size_t buf_cap);

/* A static name for a status code ("CRADLE_OK", ...). */
const char *cradle_status_name(int32_t status);

#ifdef __cplusplus
}
#endif

#endif /* CRADLE_H */
