-- Applies an operator's controls (pause, resume, end now) to a coupon's Redis
-- state, unless Redis already holds a newer version. Every version carries
-- the whole state (paused, and the end of the period), so an older change
-- arriving late cannot undo part of a newer one. Runs on a fenced coupon
-- too: the rebuild keeps whichever version is newer (rebuild.lua).
--
-- KEYS[1] meta
-- ARGV[1] version   ARGV[2] paused (1 or 0)   ARGV[3] ends_ms
--
-- Returns 1 when applied, 0 when the coupon has no state in Redis (the
-- recovery gives it one from PostgreSQL, controls included) or a newer
-- version is there.
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
if tonumber(redis.call('HGET', KEYS[1], 'control') or '0') >= tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'control', ARGV[1], 'ends_ms', ARGV[3])
if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'paused', '1')
else
    redis.call('HDEL', KEYS[1], 'paused')
end
return 1
