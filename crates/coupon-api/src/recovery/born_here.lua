-- Whether a coupon's state was created on this Redis incarnation and is whole
-- and unfenced: then no issuance answered from an earlier incarnation can be
-- missing from it. A rebuilt coupon carries no stamp and is never taken for
-- one born here.
--
-- KEYS[1] meta   KEYS[2] stock
--
-- Returns 1 or 0.
local meta = redis.call('HMGET', KEYS[1], 'born', 'fenced')
if meta[1] and not meta[2] and redis.call('EXISTS', KEYS[2]) == 1 and meta[1] == incarnation() then
    return 1
end
return 0
