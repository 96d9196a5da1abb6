-- Puts a revoked holding's unit back into stock, once.
--
-- Without leave to reissue, the customer stays in the issued set (it does not
-- get the coupon again); the returned set says whose unit went back, so a
-- repeat does nothing and a rebuild counts it (rebuild.lua: stock = total -
-- issued + returned).
--
-- With leave to reissue (ARGV[2], the number of the revoked issuance), the
-- customer leaves the issued set instead, and `reissued` says the number its
-- next issuance carries, so the writer tells that one from a late copy of the
-- revoked one, and a repeat does nothing.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] returned   KEYS[4] issued
-- KEYS[5] reissued   (of the customer's home shard)
-- ARGV[1] customer id   ARGV[2] revoked issuance (only with leave to reissue)
--
-- Returns APPLIED, ALREADY, MISSING (no state in Redis: a rebuild takes it
-- from PostgreSQL) or FENCED (being rebuilt; nothing changed).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 'MISSING'
end
if redis.call('HEXISTS', KEYS[1], 'fenced') == 1 then
    return 'FENCED'
end
-- A unit going back voids what replicas remember of the coupon (remember.lua).
if ARGV[2] then
    local revoked = tonumber(ARGV[2])
    if tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0') > revoked then
        return 'ALREADY'
    end
    redis.call('HSET', KEYS[5], ARGV[1], revoked + 1)
    if redis.call('SREM', KEYS[4], ARGV[1]) == 1 then
        redis.call('INCR', KEYS[2])
        redis.call('HINCRBY', KEYS[1], 'inflow', 1)
    end
    redis.call('HDEL', KEYS[1], 'changed')
    return 'APPLIED'
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
    return 'ALREADY'
end
redis.call('INCR', KEYS[2])
-- A unit arriving: a sharded coupon's survey must see it (crate::issuance::refill).
redis.call('HINCRBY', KEYS[1], 'inflow', 1)
redis.call('HDEL', KEYS[1], 'changed')
return 'APPLIED'
