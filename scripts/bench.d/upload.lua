-- wrk script for the "POST /upload, 1 MiB body" scenario of scripts/bench.
-- wrk adds Content-Length itself when a body is set.
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
