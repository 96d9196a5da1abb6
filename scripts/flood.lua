-- wrk script for a sustained flood on one coupon, a new customer per request
-- (docs/PERFORMANCE.md, "A sustained flood"):
--   COUPON=1 wrk -t2 -c128 -d120s --latency -s scripts/flood.lua http://127.0.0.1:8080
-- Customers never repeat across wrk's threads: thread t sends n * 16 + t + 1,
-- plus OFFSET (0 to 15; default 0), so several wrk runs at once stay apart.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  path = "/api/v1/coupons/" .. os.getenv("COUPON") .. "/issue"
  offset = tonumber(os.getenv("OFFSET") or "0")
  gateway = os.getenv("COUPON__AUTH__GATEWAY_SECRET") or ""
end

function request()
  n = n + 1
  local customer = n * 16 + tid + 1 + offset
  local body = '{"customerId":' .. customer .. '}'
  -- The API runs in gateway mode (scripts/soak.sh): this header names the
  -- customer, and X-Gateway-Token proves the request came through the gateway.
  local headers = { ["Content-Type"] = "application/json", ["X-Customer-Id"] = customer, ["X-Gateway-Token"] = gateway }
  return wrk.format("POST", path, headers, body)
end
