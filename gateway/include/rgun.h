/*
 * rgun.h: the rgun gateway interface, version 2.
 *
 * The contract between the rgun server and an application loaded from a
 * shared library: what WSGI (PEP 3333) is for Python, as a C ABI. This file
 * is the authority for applications not written in Rust; gateway/src/ffi.rs
 * is the same contract in Rust, and a test fails when the two drift apart.
 *
 * An application exports one `rgun_app` under the name given on the command
 * line (`rgun libmyapp.so:app`). Every pointer the server hands over is valid
 * only for the call it is passed to, except the `rgun_server` table, which
 * lives as long as the worker process.
 */
#ifndef RGUN_H
#define RGUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version an application built with this header speaks. A server
 * loads applications of versions RGUN_MIN_ABI_VERSION to its own: version 2
 * appended client_addr to rgun_request, which a version-1 application
 * never reads. */
#define RGUN_ABI_VERSION 2u
#define RGUN_MIN_ABI_VERSION 1u
/* "RGUN" read as a little-endian uint32_t. */
#define RGUN_APP_MAGIC 0x4e554752u

#define RGUN_OK 0
#define RGUN_ERR (-1)
/* From init: the application could not be loaded (exit code 4, not 3). */
#define RGUN_ERR_LOAD (-4)

/* Log levels for rgun_server.log, in the order of syslog(3). */
#define RGUN_LOG_ERROR 3
#define RGUN_LOG_WARNING 4
#define RGUN_LOG_INFO 6
#define RGUN_LOG_DEBUG 7

/* rgun_app.flags: handle() may be called from several threads at once. */
#define RGUN_APP_THREAD_SAFE 1u

/* A borrowed byte string: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct rgun_str {
    const uint8_t *ptr;
    size_t len;
} rgun_str;

/* One header field line, name and value as sent. */
typedef struct rgun_header {
    rgun_str name;
    rgun_str value;
} rgun_header;

/* What PEP 3333's environ holds, as slices into the worker's buffers. */
typedef struct rgun_request {
    rgun_str method;       /* REQUEST_METHOD */
    rgun_str raw_uri;      /* the request target exactly as sent */
    rgun_str path;         /* PATH_INFO: percent-decoded, no query */
    rgun_str query;        /* QUERY_STRING, without '?' */
    rgun_str script_name;  /* SCRIPT_NAME */
    rgun_str protocol;     /* "HTTP/1.0" or "HTTP/1.1" */
    rgun_str scheme;       /* "http" or "https" */
    rgun_str server_name;  /* SERVER_NAME */
    rgun_str remote_addr;  /* REMOTE_ADDR; empty on a Unix socket */
    rgun_str content_type; /* CONTENT_TYPE; empty when absent */
    const rgun_header *headers; /* every header line, in order received */
    size_t header_count;
    int64_t content_length; /* CONTENT_LENGTH, or -1 when not sent */
    uint16_t server_port;   /* 0 on a Unix socket */
    uint16_t remote_port;   /* 0 on a Unix socket */
    uint8_t body_chunked;   /* 1 when the body comes chunked (decoded for you) */
    /* Since version 2: the client's address as the server decided it (the
     * PROXY protocol source, or the hop a trusted proxy's X-Forwarded-For
     * names); remote_addr otherwise. */
    rgun_str client_addr;
} rgun_request;

/* The server's side of one request: opaque. */
typedef struct rgun_call rgun_call;

typedef struct rgun_server {
    uint32_t abi_version;
    uint32_t worker_id;   /* 0-based, stable across replacements */
    rgun_str app_arg;     /* the APP argument after the library's ':' */

    /* Read up to `len` body bytes: the count, 0 at the end, -1 on error. */
    ssize_t (*read_body)(rgun_call *call, uint8_t *buf, size_t len);

    /* Set status and headers; may be called again until the first body byte
     * is written. An empty `reason` means the standard phrase. RGUN_ERR for
     * an invalid status or header: the request then ends in a 500. */
    int32_t (*start_response)(rgun_call *call, uint16_t status, rgun_str reason,
                              const rgun_header *headers, size_t header_count);

    /* Write one piece of the body; it is sent before the call returns. */
    int32_t (*write_body)(rgun_call *call, const uint8_t *data, size_t len);

    /* start_response and the whole body at once; Content-Length is set. */
    int32_t (*respond)(rgun_call *call, uint16_t status, rgun_str reason,
                       const rgun_header *headers, size_t header_count,
                       const uint8_t *body, size_t body_len);

    /* One line to the server's error log. */
    void (*log)(int32_t level, rgun_str message);

    /* Send `len` bytes of the open file `fd` from `offset` as the next piece
     * of the body (-1: to the end), with sendfile(2). The app closes `fd`. */
    int32_t (*send_file)(rgun_call *call, int32_t fd, int64_t offset, int64_t len);
} rgun_server;

typedef struct rgun_app {
    uint32_t magic;       /* RGUN_APP_MAGIC */
    uint32_t abi_version; /* RGUN_ABI_VERSION */
    uint32_t flags;       /* RGUN_APP_THREAD_SAFE or 0 */
    /* Once per worker before its first request; may be NULL. Non-zero stops
     * the worker and the server (a boot error). */
    int32_t (*init)(const rgun_server *server);
    /* Once per request. Non-zero before the response started: a 500. */
    int32_t (*handle)(const rgun_server *server, rgun_call *call,
                      const rgun_request *request);
    /* Once per worker before it exits; may be NULL. */
    void (*shutdown)(const rgun_server *server);
    const void *reserved; /* NULL */
} rgun_app;

/* A rgun_str from a string literal. */
#define RGUN_STR(literal) ((rgun_str){(const uint8_t *)(literal), sizeof(literal) - 1})

#ifdef __cplusplus
}
#endif

#endif /* RGUN_H */
