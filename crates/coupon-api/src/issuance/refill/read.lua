-- One shard of a sharded coupon as a refill's survey reads it
-- (coupon_domain::shards::ShardReading), in one call on its slot.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] transfers
--
-- Returns {stock, inflow, open transfers, fenced (1 or 0)}, or {'MISSING'}
-- when the shard has no state (the recovery rebuilds the coupon).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'MISSING'}
end
local meta = redis.call('HMGET', KEYS[1], 'inflow', 'fenced')
return {
    tonumber(redis.call('GET', KEYS[2]) or '0'),
    tonumber(meta[1] or '0'),
    redis.call('HLEN', KEYS[3]),
    meta[2] and 1 or 0,
}
