-- POST bodies for wrk, one JSON body per line of a file, cycled request by request:
--   wrk -s benchmarks/_wrk_post.lua URL -- BODIES_FILE
-- done() prints one line "WRK_JSON {...}" (latencies in microseconds) for _wrk.py to read.
local requests = {}
local n = 0
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      requests[n] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, line)
    end
  end
  i = math.random(n) - 1 -- threads start at different bodies
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
