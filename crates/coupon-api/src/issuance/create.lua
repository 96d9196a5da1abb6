-- Gives a new coupon its Redis state unless it already has one, so it is safe
-- to repeat: a second call never resets stock that was taken. (A coupon that
-- may have holders is rebuilt by rebuild.lua instead.)
--
-- KEYS[1] meta   KEYS[2] stock   (of one shard: crate::issuance::issuer)
-- ARGV[1] starts_ms   ARGV[2] ends_ms   ARGV[3] total   ARGV[4] this shard's
-- stock   ARGV[5] the coupon's number of shards
--
-- The state is stamped with the incarnation it was born on (`born`): while
-- that incarnation has no issue script loaded, nothing was ever issued from
-- it, so the recovery need not fence and rebuild the coupon (born_here.lua).
--
-- Returns 1 when it created the state, 0 when the coupon was already primed.
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[1], 'ends_ms', ARGV[2], 'total', ARGV[3], 'born', incarnation())
if tonumber(ARGV[5]) > 1 then
    redis.call('HSET', KEYS[1], 'shards', ARGV[5])
end
return 1
