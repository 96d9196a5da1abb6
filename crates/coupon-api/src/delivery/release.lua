-- Removes outbox entries whose events Kafka acknowledged, unless the coupon
-- is fenced: a rebuild counts the outbox's customers as holders, so while it
-- waits for the writer nothing may leave the outbox unseen (the relay sends
-- the entries again later, which the idempotent writer absorbs).
--
-- KEYS[1] meta   KEYS[2] outbox   ARGV entry ids
--
-- Returns the number of entries removed.
if redis.call('HEXISTS', KEYS[1], 'fenced') == 1 then
    return 0
end
return redis.call('XDEL', KEYS[2], unpack(ARGV))
