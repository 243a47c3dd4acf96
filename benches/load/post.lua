-- wrk script for the upload case: every request is a POST of a 1 MiB body
-- (BODY_BYTES overrides the size). The Authorization header comes from -H.
local size = tonumber(os.getenv("BODY_BYTES") or "") or 1048576
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
