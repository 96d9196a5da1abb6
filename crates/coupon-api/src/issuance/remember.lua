-- What every issue request for a coupon would be answered now, when that
-- answer holds until something changes the coupon (crate::issuance::memory):
-- paused, not started yet, or sold out, with who holds it.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] issued   KEYS[4] transfers
-- (of one shard; a sharded coupon is sold out when every shard says so and
-- no token moved before a later read: crate::issuance::memory)
-- ARGV[1] the most holders worth remembering
--
-- Returns nil when there is nothing to remember (unknown, fenced, ended,
-- stock left, too many holders), else
--   {token, 'PAUSED'}
--   {token, 'NOT_STARTED', ms until the start}
--   {token, 'SOLD_OUT', ms until the end, holders}
-- The token is meta's `changed` field, set here when absent. Whatever may
-- change these answers removes it: control.lua (pause, resume, end, stock),
-- return.lua (a unit back in stock) and give.lua (units transferred in)
-- delete the field, a rebuild or a retirement the whole hash. A remembered
-- answer lives while its token does.
local meta = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'fenced', 'paused', 'changed')
if not meta[1] or meta[3] then
    return nil
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local token = meta[5]
if not token then
    token = time[1] .. '.' .. time[2]
    redis.call('HSET', KEYS[1], 'changed', token)
end
if meta[4] then
    return {token, 'PAUSED'}
end
if now_ms < tonumber(meta[1]) then
    return {token, 'NOT_STARTED', tonumber(meta[1]) - now_ms}
end
if now_ms >= tonumber(meta[2]) then
    return nil
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 or redis.call('HLEN', KEYS[4]) > 0 then
    return nil
end
if redis.call('SCARD', KEYS[3]) > tonumber(ARGV[1]) then
    return nil
end
return {token, 'SOLD_OUT', tonumber(meta[2]) - now_ms, redis.call('SMEMBERS', KEYS[3])}
