-- wrk script for bench/load.py: POST one AdmissionReview body over and over, and write
-- the run's figures as JSON for the driver.
--
--   WRK_BODY=body.json WRK_JSON=out.json wrk -s bench/post.lua https://127.0.0.1:8443/mutate
--
-- Keep-alive is wrk's default; `-H "Connection: close"` makes every request open (and
-- TLS-handshake) a new connection.

local path = assert(os.getenv("WRK_BODY"), "set WRK_BODY to the request body file")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local out_path = os.getenv("WRK_JSON")
  if not out_path then
    return
  end
  local out = assert(io.open(out_path, "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
  out:close()
end
