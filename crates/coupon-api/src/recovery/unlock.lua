-- Renews (ARGV[2] > 0: new time to live in ms) or releases (ARGV[2] = 0) the
-- recovery lock, only if the caller still holds it.
--
-- KEYS[1] lock   ARGV[1] the caller's token   ARGV[2] time to live or 0
--
-- Returns 1 when the caller held the lock, 0 otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
    redis.call('DEL', KEYS[1])
end
return 1
