-- wrk script: every request is one desired-state write that changes something.
-- Run with one connection per thread (-t N -c N): thread i owns projects a-i-0 .. a-i-(per-1) and
-- alternates POST .../stop and .../start on each of them, so no write is a no-op and no two
-- clients ever wait for the same row lock.
-- Arguments (after --): per token.

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  per = tonumber(args[1])
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  k = 0
end

function request()
  local j = k % per
  local verb = (math.floor(k / per) % 2 == 0) and "stop" or "start"
  k = k + 1
  return wrk.format("POST", "/v1/projects/a-" .. id .. "-" .. j .. "/" .. verb)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
