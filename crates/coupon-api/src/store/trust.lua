-- Records that the recovery made this Redis safe to issue from, unless it is
-- no longer the incarnation the recovery looked at (it failed over or
-- restarted meanwhile, and what was fenced may not be here).
--
-- KEYS[1] trusted
-- ARGV[1] the incarnation the recovery fenced
--
-- Returns 1 when recorded, 0 when the incarnation changed.
if incarnation() ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
