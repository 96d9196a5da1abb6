-- Decides issuance requests for one coupon atomically, one or many per call
-- (merged calls: crate::issuance::lanes). Every key carries the coupon's hash
-- tag, so the script touches one slot and runs unchanged on Redis Cluster.
--
-- KEYS[1] meta (hash: starts_ms, ends_ms, total; `fenced` while rebuilt;
--          `paused` while an operator paused the promotion; `shards` when
--          the coupon has more than one)
-- KEYS[2] stock (integer)
-- KEYS[3] issued (set of customer ids)      KEYS[4] outbox (stream of events)
-- KEYS[5] reissued (hash: customer id -> number of its next issuance, for
--          customers revoked with leave to get the coupon again)
-- ARGV[1] how many shards the caller routed by (coupon_domain::shards)
-- ARGV[2..] customer ids, in the order the requests arrived
--
-- Returns {outcome} when every customer gets it (fenced, unknown, paused,
-- outside the period), else one answer per customer, in ARGV's order:
-- {outcome} or {'ISSUED', outbox entry id, issued_at_ms, issuance}. A
-- customer twice gets ALREADY_ISSUED the second time. A coupon with another
-- number of shards answers {'SHARDS', n} and decides nothing: the caller
-- routes again. On a shard of a sharded coupon, SOLD_OUT means this shard is
-- empty; the caller refills it or finds the coupon sold out
-- (crate::issuance::refill).
--
-- coupon-api calls it by SHA and never loads it on NOSCRIPT: a Redis without
-- it restarted or failed over, and only the recovery, once it has fenced the
-- coupons, loads it again (crate::recovery).
local period = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'fenced', 'paused', 'shards')
if period[3] then
    return {'FENCED'}
end
if not period[1] then
    return {'COUPON_NOT_FOUND'}
end
local shards = tonumber(period[5] or '1')
if shards ~= tonumber(ARGV[1]) then
    return {'SHARDS', shards}
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

local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local taken = 0
local answers = {}
for i = 2, #ARGV do
    local customer = ARGV[i]
    if redis.call('SISMEMBER', KEYS[3], customer) == 1 then
        answers[i - 1] = {'ALREADY_ISSUED'}
    elseif stock - taken <= 0 then
        answers[i - 1] = {'SOLD_OUT'}
    else
        taken = taken + 1
        redis.call('SADD', KEYS[3], customer)
        -- Read on success only: rejections, the bulk of a spike, do not pay for it.
        local issuance = tonumber(redis.call('HGET', KEYS[5], customer) or '0')
        local entry
        if issuance == 0 then
            entry = redis.call('XADD', KEYS[4], '*', 'customer', customer, 'issued_at', now_ms)
        else
            entry = redis.call('XADD', KEYS[4], '*', 'customer', customer, 'issued_at', now_ms, 'issuance', issuance)
        end
        answers[i - 1] = {'ISSUED', entry, now_ms, issuance}
    end
end
if taken > 0 then
    redis.call('DECRBY', KEYS[2], taken)
end
return answers
