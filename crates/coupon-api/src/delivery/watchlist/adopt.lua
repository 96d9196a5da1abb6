-- Takes a dead replica's claims over in one step: they move into the
-- caller's claims, and the dead replica is forgotten.
--
-- KEYS[1] replicas   KEYS[2] the dead replica's alive key
-- KEYS[3] its claims   KEYS[4] the caller's claims   ARGV[1] its id
--
-- Returns the coupon ids taken over; none when the replica lives after all.
if redis.call('EXISTS', KEYS[2]) == 1 then
    return {}
end
local coupons = redis.call('SMEMBERS', KEYS[3])
if #coupons > 0 then
    redis.call('SUNIONSTORE', KEYS[4], KEYS[4], KEYS[3])
    redis.call('DEL', KEYS[3])
end
redis.call('SREM', KEYS[1], ARGV[1])
return coupons
