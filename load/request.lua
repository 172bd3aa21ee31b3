-- wrk request script for load/bench.py: one fixed request, described by files that the
-- harness writes per scenario (so secrets never appear on a command line):
--
--   BENCH_METHOD        GET | POST ...                       (default GET)
--   BENCH_BODY_FILE     path of the request body              (optional)
--   BENCH_HEADERS_FILE  path of "Name: value" lines           (optional)
--
-- Only wrk.method/body/headers are set and no request() function is defined, so wrk builds
-- the request once and sends it without calling Lua per request: the numbers measure the
-- server, not this script.

local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  wrk.body = read(body_file)
  wrk.headers["Content-Type"] = "application/json"
end

local headers_file = os.getenv("BENCH_HEADERS_FILE")
if headers_file and headers_file ~= "" then
  for line in read(headers_file):gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      wrk.headers[name] = value
    end
  end
end
