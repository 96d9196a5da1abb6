-- Applies an operator's controls (pause, resume, end, a changed stock) to a
-- coupon's Redis state. Every version carries the whole state (paused, the
-- end of the period, the total quantity), so an older change arriving late
-- cannot undo part of a newer one. The same version is applied again: an
-- operator's retry, or the committed change after one that PostgreSQL rolled
-- back. Runs on a fenced coupon too: the rebuild keeps whichever version is
-- newer (rebuild.lua).
--
-- KEYS[1] meta   KEYS[2] stock
-- ARGV[1] version   ARGV[2] paused (1 or 0)   ARGV[3] ends_ms   ARGV[4] total
-- ARGV[5] 1 when this key set carries the coupon's stock change (an unsharded
--         coupon, or a sharded one's first shard), 0 for its other shards
--
-- Returns
--   APPLIED
--   STALE         a newer version is there; nothing changed
--   MISSING       the coupon has no state in Redis (the recovery gives it one
--                 from PostgreSQL, controls and total included)
--   FENCED        a lower total while the coupon is rebuilt: who holds it is
--                 not known yet; nothing changed
--   BELOW_ISSUED  a lower total than the units issued; nothing changed
-- A new total moves the stock by the difference, so units issued meanwhile
-- stay counted.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 'MISSING'
end
local held = redis.call('HMGET', KEYS[1], 'control', 'total', 'fenced')
if tonumber(held[1] or '0') > tonumber(ARGV[1]) then
    return 'STALE'
end
local change = tonumber(ARGV[4]) - tonumber(held[2] or ARGV[4])
if ARGV[5] ~= '1' then
    change = 0
end
if held[3] then
    -- The rebuild sets the stock from the total.
    if change < 0 then
        return 'FENCED'
    end
elseif change ~= 0 then
    if tonumber(redis.call('GET', KEYS[2]) or '0') + change < 0 then
        return 'BELOW_ISSUED'
    end
    redis.call('INCRBY', KEYS[2], change)
    if change > 0 then
        -- Added units: a sharded coupon's survey must see them arrive.
        redis.call('HINCRBY', KEYS[1], 'inflow', 1)
    end
end
redis.call('HSET', KEYS[1], 'control', ARGV[1], 'ends_ms', ARGV[3], 'total', ARGV[4])
-- Answers replicas remember for the coupon (remember.lua) are void now.
redis.call('HDEL', KEYS[1], 'changed')
if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'paused', '1')
else
    redis.call('HDEL', KEYS[1], 'paused')
end
return 'APPLIED'
