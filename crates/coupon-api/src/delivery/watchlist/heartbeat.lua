-- Tells the other replicas this one lives.
--
-- KEYS[1] replicas   KEYS[2] the replica's alive key
-- ARGV[1] replica id   ARGV[2] TTL in milliseconds
--
-- Returns 1 when the alive key had lapsed (first beat, a stall longer than
-- the TTL, a wiped Redis): another replica may have taken the claims over,
-- and the caller claims its coupons again.
local lapsed = redis.call('EXISTS', KEYS[2]) == 0
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
if lapsed then
    return 1
end
return 0
