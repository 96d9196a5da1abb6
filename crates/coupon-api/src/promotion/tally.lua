-- Adds one API replica's issue answers since its last call to a coupon's
-- tally, summed over every replica, and the units it issued to the ring of
-- per-second counts. The second is Redis's, so every replica counts alike.
--
-- KEYS[1] tally (hash: outcome -> count)
-- KEYS[2] rate (hash: slot -> '<unix second>:<count>', slot = second % 64)
-- ARGV[1] units issued   ARGV[2] how long both are kept after the last call (ms)
-- ARGV[3], ARGV[4], ...  outcome, count
for i = 3, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local issued = tonumber(ARGV[1])
if issued > 0 then
    local second = tonumber(redis.call('TIME')[1])
    local slot = second % 64
    local count = issued
    local held = redis.call('HGET', KEYS[2], slot)
    if held then
        local at, n = string.match(held, '^(%d+):(%d+)$')
        if tonumber(at) == second then
            count = count + tonumber(n)
        end
    end
    redis.call('HSET', KEYS[2], slot, second .. ':' .. count)
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 0
