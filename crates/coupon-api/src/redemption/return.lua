-- Puts a revoked holding's unit back into stock, once. The customer stays in
-- the issued set (it does not get the coupon again); the returned set says
-- whose unit went back, so a repeat does nothing and a rebuild counts it
-- (rebuild.lua: stock = total - issued + returned).
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] returned
-- ARGV[1] customer id
--
-- Returns APPLIED, ALREADY, MISSING (no state in Redis: a rebuild takes it
-- from PostgreSQL) or FENCED (being rebuilt; nothing changed).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 'MISSING'
end
if redis.call('HEXISTS', KEYS[1], 'fenced') == 1 then
    return 'FENCED'
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
    return 'ALREADY'
end
redis.call('INCR', KEYS[2])
return 'APPLIED'
