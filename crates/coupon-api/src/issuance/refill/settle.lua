-- The last step of a transfer: the donor forgets a transfer the receiver has
-- (or voided), so surveys stop counting it as open.
--
-- KEYS[1] transfers
-- ARGV[1] transfer id
--
-- Returns 1 when it was open, 0 when already settled.
return redis.call('HDEL', KEYS[1], ARGV[1])
