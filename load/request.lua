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

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
  .. package.path
local common = require("common")
local read = common.read

common.setup("GET", true)
