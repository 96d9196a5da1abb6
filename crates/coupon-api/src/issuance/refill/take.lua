-- The first step of a transfer: takes up to ARGV[2] units from a donor shard
-- and records the transfer on it, in one step, so a unit is always either in
-- the donor's stock or in a transfer it records until the receiver has it.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] transfers
-- ARGV[1] transfer id   ARGV[2] units wanted   ARGV[3] receiving shard
--
-- Returns {units taken, epoch}: 0 units when the shard is empty, fenced or
-- missing. The epoch (the fence token of the coupon's last rebuild, `epoch`
-- in every shard's meta; empty before any) goes with the
-- transfer, so the receiver refuses a transfer a rebuild voided. Taking with
-- an id already recorded takes nothing more and answers the recorded units.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'fenced') == 1 then
    return {0, ''}
end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local recorded = redis.call('HGET', KEYS[3], ARGV[1])
if recorded then
    return {tonumber(string.match(recorded, '^%d+:(%d+):')), epoch}
end
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local units = math.min(tonumber(ARGV[2]), stock)
if units <= 0 then
    return {0, epoch}
end
redis.call('DECRBY', KEYS[2], units)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3] .. ':' .. units .. ':' .. epoch)
return {units, epoch}
