-- Lets an ended coupon's keys expire after a grace period, once its outbox is
-- empty (an entry there is an issuance Kafka has not acknowledged yet).
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] issued   KEYS[4] outbox
-- KEYS[5] returned   KEYS[6] reissued   KEYS[7] transfers   KEYS[8] received
-- (of one shard: crate::recovery::fence)
-- ARGV[1] grace in milliseconds
--
-- Returns 1 when the keys will expire, 0 while the outbox still has entries.
if redis.call('XLEN', KEYS[4]) > 0 then
    return 0
end
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}) do
    redis.call('PEXPIRE', key, ARGV[1])
end
return 1
