-- The incarnation of the Redis this runs on and the one the recovery last
-- trusted (KEYS[1]; false when none was ever recorded).
--
-- KEYS[1] trusted
--
-- Returns {incarnation, trusted or false}.
return {incarnation(), redis.call('GET', KEYS[1])}
