-- The second step of a transfer: adds its units to the receiving shard, once
-- per transfer id.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] received
-- ARGV[1] transfer id   ARGV[2] units   ARGV[3] the donor's epoch at the take
--
-- Returns GIVEN, ALREADY (given before), or VOID: the receiver is fenced,
-- missing, or was rebuilt since the take (another epoch). A rebuild counts
-- every unit from PostgreSQL, so the units of a voided transfer are in the
-- stock it sets, and adding them again would oversell.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 'VOID'
end
local meta = redis.call('HMGET', KEYS[1], 'fenced', 'epoch')
if meta[1] or (meta[2] or '') ~= ARGV[3] then
    return 'VOID'
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then
    return 'ALREADY'
end
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'inflow', 1)
-- Units arriving void what replicas remember of the coupon (remember.lua).
redis.call('HDEL', KEYS[1], 'changed')
return 'GIVEN'
