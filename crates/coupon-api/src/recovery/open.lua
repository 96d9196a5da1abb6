-- Gives one shard of a rebuilt sharded coupon its share of the stock and
-- lifts its fence (after rebuild.lua counted every shard's holders).
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] transfers   KEYS[4] received
-- ARGV[1] fence token   ARGV[2] the shard's stock
--
-- Transfers recorded before the rebuild are void: the stock counts their
-- units. The token becomes the shard's epoch, so a transfer taken before
-- and given after is refused (crate::issuance::refill's give.lua), and the
-- inflow moves, so a survey running across the rebuild starts over.
--
-- Returns the stock, or -1 when the fence is no longer the caller's.
if redis.call('HGET', KEYS[1], 'fenced') ~= ARGV[1] then
    return -1
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[1], 'fenced')
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'inflow', 1)
return tonumber(ARGV[2])
