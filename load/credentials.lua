-- wrk script for load/bench.py's flood rows: each request verifies the next credential of
-- a file (one a line), as {"credential": "<line>"}; thread k of BENCH_THREADS takes lines
-- k, k + BENCH_THREADS, ... (all of them when the file is shorter), and starts over at the
-- end. The bodies are built once, in init(); per request only wrk.format runs.
--
--   BENCH_METHOD, BENCH_HEADERS_FILE   as in request.lua
--   BENCH_CREDENTIALS_FILE             the credentials
--   BENCH_THREADS                      wrk -t of this run

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
  .. package.path
local common = require("common")
local read = common.read

common.setup("POST", false)
wrk.headers["Content-Type"] = "application/json"

local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local bodies, count, pos = {}, 0, 0

function init(args)
  local path = assert(os.getenv("BENCH_CREDENTIALS_FILE"), "BENCH_CREDENTIALS_FILE unset")
  local step = tonumber(os.getenv("BENCH_THREADS") or "1")
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  local first = (id or 0) + 1
  if first > #lines then  -- fewer lines than threads: every thread sends them all
    first, step = 1, 1
  end
  for i = first, #lines, step do
    bodies[#bodies + 1] = '{"credential":"' .. lines[i] .. '"}'
  end
  count = #bodies
  assert(count > 0, "no credentials in " .. path)
end

function request()
  pos = pos % count + 1
  return wrk.format(nil, nil, nil, bodies[pos])
end

-- BENCH_LATENCY_FILE: where to write the run's latencies as "<microseconds> <count>" lines
-- (wrk's histogram, coordinated-omission corrected like its percentiles), so that runs can
-- be pooled (load/bulk_import.py: the p99 over all of an import's windows).
function done(summary, latency, requests)
  local path = os.getenv("BENCH_LATENCY_FILE")
  if not path or path == "" then
    return
  end
  local f = assert(io.open(path, "w"))
  for i = 1, #latency do
    local value, count = latency(i)
    f:write(string.format("%d %d\n", value, count))
  end
  f:close()
end
