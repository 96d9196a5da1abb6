-- Replaces a fenced coupon's state with one rebuilt from PostgreSQL, and lifts
-- the fence, in one step.
--
-- KEYS[1] meta   KEYS[2] stock   KEYS[3] issued   KEYS[4] outbox
-- KEYS[5] staged holders (PostgreSQL's, added by the caller; may not exist)
-- KEYS[6] returned   KEYS[7] staged returned holders (PostgreSQL's holders
--         whose revoked unit went back into stock; may not exist)
-- KEYS[8] reissued   KEYS[9] staged reissued customers (PostgreSQL's; a hash
--         customer -> number of its next or current issuance; may not exist)
-- ARGV[1] fence token   ARGV[2] starts_ms   ARGV[3] ends_ms   ARGV[4] total
-- ARGV[5] control version   ARGV[6] paused (1 or 0), as PostgreSQL had them
--         together with ARGV[3] and ARGV[4]
-- ARGV[7] the coupon's number of shards; with more than one, this is one
--         shard, given only the holders whose home it is, and it stays
--         fenced with no stock: open.lua gives it its share once every
--         shard's holders are counted
--
-- Returns the stock it set (one shard), or {held, total}: the shard's
-- holders less its returned ones, and the total it kept (several shards);
-- -1 when the fence is no longer the caller's (another rebuild took over;
-- nothing changed).
if redis.call('HGET', KEYS[1], 'fenced') ~= ARGV[1] then
    redis.call('DEL', KEYS[5], KEYS[7], KEYS[9])
    return -1
end
-- Entries still in the outbox may not have reached PostgreSQL yet; their
-- customers hold the coupon all the same, unless the entry is of an issuance
-- revoked since with leave to reissue. (The outbox keeps them while the
-- coupon is fenced: release.lua refuses to remove them.)
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], '-', '+')) do
    local fields = entry[2]
    local customer, issuance = nil, 0
    for i = 1, #fields, 2 do
        if fields[i] == 'customer' then
            customer = fields[i + 1]
        elseif fields[i] == 'issuance' then
            issuance = tonumber(fields[i + 1])
        end
    end
    if customer and issuance >= tonumber(redis.call('HGET', KEYS[9], customer) or '0') then
        redis.call('SADD', KEYS[5], customer)
    end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('RENAME', KEYS[5], KEYS[3])
else
    redis.call('DEL', KEYS[3])
end
-- An operator's control that reached Redis after PostgreSQL was read for this
-- rebuild is newer than ARGV's: it stays, with the end and total it set.
local control = redis.call('HMGET', KEYS[1], 'control', 'paused', 'ends_ms', 'total')
local version, paused, ends, total = ARGV[5], ARGV[6] == '1', ARGV[3], ARGV[4]
if tonumber(control[1] or '0') > tonumber(ARGV[5]) then
    version, paused, ends, total = control[1], control[2] ~= false, control[3] or ARGV[3], control[4] or ARGV[4]
end
-- PostgreSQL commits a returned unit before Redis hears of it, so its
-- returned holders are all there are.
if redis.call('EXISTS', KEYS[7]) == 1 then
    redis.call('RENAME', KEYS[7], KEYS[6])
else
    redis.call('DEL', KEYS[6])
end
if redis.call('EXISTS', KEYS[9]) == 1 then
    redis.call('RENAME', KEYS[9], KEYS[8])
else
    redis.call('DEL', KEYS[8])
end
-- Every holder took one, and each returned one went back; PostgreSQL's
-- remaining_quantity says the same once the writer has applied the outbox's
-- events too.
local held = redis.call('SCARD', KEYS[3]) - redis.call('SCARD', KEYS[6])
local stock = math.max(tonumber(total) - held, 0)
-- Transfers count how often a shard received units; that never goes back.
local inflow = redis.call('HGET', KEYS[1], 'inflow')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[2], 'ends_ms', ends, 'total', total, 'control', version)
if paused then
    redis.call('HSET', KEYS[1], 'paused', '1')
end
if inflow then
    redis.call('HSET', KEYS[1], 'inflow', inflow)
end
if tonumber(ARGV[7]) > 1 then
    redis.call('HSET', KEYS[1], 'shards', ARGV[7], 'fenced', ARGV[1])
    redis.call('SET', KEYS[2], 0)
    return {held, tonumber(total)}
end
redis.call('SET', KEYS[2], stock)
return stock
