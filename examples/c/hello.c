/*
 * hello.c: an rgun application in plain C, built from gateway/include/rgun.h
 * alone, to show (and test) that the header is all a non-Rust app needs.
 * `GET /` answers in one call; `/echo-body` streams the request body back.
 */
#include <stdio.h>
#include <string.h>

#include "rgun.h"

/* The echo copies through this much at a time, so any body size works. */
#define ECHO_PIECE 16384

static int32_t hello_init(const rgun_server *server)
{
    char line[128];
    int n = snprintf(line, sizeof line, "hello_c: worker %u ready (ABI %u)",
                     (unsigned)server->worker_id, (unsigned)server->abi_version);
    if (n < 0)
        return RGUN_ERR;
    rgun_str message = {(const uint8_t *)line,
                        (size_t)n < sizeof line ? (size_t)n : sizeof line - 1};
    server->log(RGUN_LOG_INFO, message);
    return RGUN_OK;
}

static int str_is(rgun_str s, const char *literal)
{
    size_t len = strlen(literal);
    return s.len == len && (len == 0 || memcmp(s.ptr, literal, len) == 0);
}

static int32_t text(const rgun_server *server, rgun_call *call, uint16_t status,
                    const char *body)
{
    rgun_header headers[] = {
        {RGUN_STR("Content-Type"), RGUN_STR("text/plain")},
    };
    return server->respond(call, status, RGUN_STR(""), headers, 1,
                           (const uint8_t *)body, strlen(body));
}

/* Streams the body back as it arrives: no Content-Length, so the server
 * frames it (chunked on HTTP/1.1). Once the head is sent, a failure can only
 * cut the response short; returning RGUN_ERR tells the server so. */
static int32_t echo_body(const rgun_server *server, rgun_call *call)
{
    rgun_header headers[] = {
        {RGUN_STR("Content-Type"), RGUN_STR("application/octet-stream")},
    };
    uint8_t piece[ECHO_PIECE];

    /* Read the first piece before answering, so that an unreadable body
     * still becomes a clean error status rather than a truncated 200. */
    ssize_t n = server->read_body(call, piece, sizeof piece);
    if (n < 0)
        return RGUN_ERR;
    if (server->start_response(call, 200, RGUN_STR(""), headers, 1) != RGUN_OK)
        return RGUN_ERR;
    while (n > 0) {
        if (server->write_body(call, piece, (size_t)n) != RGUN_OK)
            return RGUN_ERR;
        n = server->read_body(call, piece, sizeof piece);
    }
    return n == 0 ? RGUN_OK : RGUN_ERR;
}

static int32_t hello_handle(const rgun_server *server, rgun_call *call,
                            const rgun_request *request)
{
    if (str_is(request->path, "/"))
        return text(server, call, 200, "Hello from C\n");
    if (str_is(request->path, "/echo-body"))
        return echo_body(server, call);
    return text(server, call, 404, "not found\n");
}

/* Each call touches only its own stack: safe to call from several threads. */
const rgun_app app = {
    .magic = RGUN_APP_MAGIC,
    .abi_version = RGUN_ABI_VERSION,
    .flags = RGUN_APP_THREAD_SAFE,
    .init = hello_init,
    .handle = hello_handle,
    .shutdown = NULL,
    .reserved = NULL,
};
