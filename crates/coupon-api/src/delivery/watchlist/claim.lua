-- Claims a coupon for a replica before its first issuance there: should the
-- replica die, whoever takes its claims over reads the coupon's outbox. Only
-- a coupon Redis holds is claimed, so requests for made-up coupon ids leave
-- nothing behind.
--
-- The replica joins the replicas set here too (its heartbeat may not have
-- run yet), so claims are never left where no sweep looks.
--
-- KEYS[1] index   KEYS[2] the replica's claims   KEYS[3] replicas
-- ARGV[1] coupon id   ARGV[2] replica id   ARGV[3] the shard whose outbox is
--         claimed (coupon_domain::shards::CouponShard: the coupon id for the
--         first shard)
--
-- Returns 1 when claimed, 0 when Redis does not hold the coupon.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    redis.call('SADD', KEYS[2], ARGV[3])
    redis.call('SADD', KEYS[3], ARGV[2])
    return 1
end
return 0
