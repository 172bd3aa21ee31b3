-- wrk script for load/bench.py's admin-attack row: every request carries a NEW random
-- wrong admin token (43 urlsafe characters, not of the gwa_ shape, so each one is a fresh
-- argon2 guess that no memo answers), from one of BENCH_ATTACKERS client addresses
-- (X-Forwarded-For; the bench connects from 127.0.0.1, a trusted proxy by default, as an
-- ingress in front of the gateway would).
--
--   BENCH_METHOD, BENCH_BODY_FILE, BENCH_HEADERS_FILE   as in request.lua
--   BENCH_ATTACKERS                                     client addresses (default 16)
--
-- done() prints one "bench-status <code> <count>" line per HTTP status, over all threads.

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
  .. package.path
local common = require("common")
local read = common.read

common.setup("POST", true)

local URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local alphabet = {}
for i = 1, #URLSAFE do
  alphabet[i] = URLSAFE:sub(i, i)
end
local TOKEN_LEN = 43

local attackers = tonumber(os.getenv("BENCH_ATTACKERS") or "16")
local addresses = {}
for i = 1, attackers do
  addresses[i] = "203.0.113." .. i  -- TEST-NET-3
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  -- each thread's generator seeded from the kernel: no two threads send the same tokens
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(6)
  f:close()
  local seed = 0
  for i = 1, #bytes do
    seed = seed * 256 + bytes:byte(i)
  end
  math.randomseed(seed)
  counts = {}  -- global: read by done() through thread:get
  sent = 0
end

local buf = {}

function request()
  for i = 1, TOKEN_LEN do
    buf[i] = alphabet[math.random(64)]
  end
  sent = sent + 1
  wrk.headers["Authorization"] = "Bearer " .. table.concat(buf)
  wrk.headers["X-Forwarded-For"] = addresses[sent % attackers + 1]
  return wrk.format()
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts") or {}) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("bench-status %d %d\n", status, n))
  end
end
