-- Prepended to the scripts that stamp or compare a Redis incarnation: the
-- server process (run_id, new on every restart) and its replication history
-- (master_replid, new on every promotion). Scripts may call INFO; ROLE they may not.
local function incarnation()
    local server = redis.call('INFO', 'server')
    local replication = redis.call('INFO', 'replication')
    return string.match(server, 'run_id:(%w+)') .. ':' .. string.match(replication, 'master_replid:(%w+)')
end
