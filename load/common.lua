-- Shared by the wrk scripts of load/bench.py: reading a file, and the request's method,
-- body (BENCH_BODY_FILE) and extra headers (BENCH_HEADERS_FILE, "Name: value" lines) from
-- the environment. A script loads it with:
--   package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
--     .. package.path
--   local common = require("common")

local common = {}

function common.read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function common.setup(default_method, with_body)
  wrk.method = os.getenv("BENCH_METHOD") or default_method
  local body_file = os.getenv("BENCH_BODY_FILE")
  if with_body and body_file and body_file ~= "" then
    wrk.body = common.read(body_file)
    wrk.headers["Content-Type"] = "application/json"
  end
  local headers_file = os.getenv("BENCH_HEADERS_FILE")
  if headers_file and headers_file ~= "" then
    for line in common.read(headers_file):gmatch("[^\r\n]+") do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      if name then
        wrk.headers[name] = value
      end
    end
  end
end

return common
