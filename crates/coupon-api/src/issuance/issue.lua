-- Decides one issuance request atomically. Every key carries the coupon's hash
-- tag, so the script touches one slot and runs unchanged on Redis Cluster.
--
-- KEYS[1] meta (hash: starts_ms, ends_ms, total; `fenced` while rebuilt;
--          `paused` while an operator paused the promotion)
-- KEYS[2] stock (integer)
-- KEYS[3] issued (set of customer ids)      KEYS[4] outbox (stream of events)
-- KEYS[5] reissued (hash: customer id -> number of its next issuance, for
--          customers revoked with leave to get the coupon again)
-- ARGV[1] customer id
--
-- Returns {outcome} or {'ISSUED', outbox entry id, issued_at_ms, issuance}.
--
-- coupon-api calls it by SHA and never loads it on NOSCRIPT: a Redis without
-- it restarted or failed over, and only the recovery, once it has fenced the
-- coupons, loads it again (crate::recovery).
local period = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'fenced', 'paused')
if period[3] then
    return {'FENCED'}
end
if not period[1] then
    return {'COUPON_NOT_FOUND'}
end
if period[4] then
    return {'PAUSED'}
end

-- The server's clock, so every API replica judges the period alike.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now_ms < tonumber(period[1]) then
    return {'NOT_STARTED'}
end
if now_ms >= tonumber(period[2]) then
    return {'EXPIRED'}
end

if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
    return {'ALREADY_ISSUED'}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') <= 0 then
    return {'SOLD_OUT'}
end

redis.call('DECR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
-- Read on success only: rejections, the bulk of a spike, do not pay for it.
local issuance = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
local entry
if issuance == 0 then
    entry = redis.call('XADD', KEYS[4], '*', 'customer', ARGV[1], 'issued_at', now_ms)
else
    entry = redis.call('XADD', KEYS[4], '*', 'customer', ARGV[1], 'issued_at', now_ms, 'issuance', issuance)
end
return {'ISSUED', entry, now_ms, issuance}
