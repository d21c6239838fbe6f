/// The Lua script that applies a run of adds and removes to the `serverPool` key inside Redis,
/// atomically, in one read and one write of the key however many changes the run holds.
///
/// Every instance that receives a message runs it. Because each change is an upsert or a delete by
/// address on whatever the key holds at that moment, running it twice changes nothing, and the last
/// message about an address decides its presence, whichever instance runs last: instances converge,
/// and the key never holds an address twice.
///
/// KEYS[1] the pool key, KEYS[2] the hash beside it (`version`, `changed_at`): every write of the
/// pool adds one to the version and records the server's time; a run that changes nothing writes
/// nothing. The script returns the version after it.
///
/// ARGV[1] the instance's whole pool as JSON, written when the key is missing,
/// is not a JSON array, or holds an entry that is plainly not a backend (so a broken key is repaired
/// by the next change instead of blocking every change). Then, for each change, three arguments:
/// "add" or "remove", the address, and the entry as JSON (for add; empty for remove). The entry check
/// here is coarse (shape and port); l4lb validates every entry fully whenever it reads the key.
enum PoolUpdateScript {
    static let source = """
        local function address_of(entry)
          if type(entry) == 'table' then return entry['address'] end
          return entry
        end
        local function plausible(entry)
          local address = address_of(entry)
          if type(address) ~= 'string' then return false end
          if type(entry) == 'table' and entry['weight'] ~= nil and type(entry['weight']) ~= 'number' then
            return false
          end
          local port = tonumber(string.match(address, ':(%d+)$'))
          return port ~= nil and port >= 1 and port <= 65535
        end
        local function changed()
          local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
          redis.call('HSET', KEYS[2], 'changed_at', redis.call('TIME')[1])
          return version
        end
        local raw = redis.call('GET', KEYS[1])
        local ok, pool = false, nil
        if raw then ok, pool = pcall(cjson.decode, raw) end
        local valid = ok and type(pool) == 'table' and (next(pool) == nil or pool[1] ~= nil)
        if valid then
          for _, entry in ipairs(pool) do
            if not plausible(entry) then valid = false end
          end
        end
        if not valid then
          redis.call('SET', KEYS[1], ARGV[1])
          return changed()
        end
        local out, at = {}, {}
        for _, entry in ipairs(pool) do
          local address = address_of(entry)
          if at[address] == nil then
            table.insert(out, entry)
            at[address] = #out
          end
        end
        for i = 2, #ARGV, 3 do
          local operation, address = ARGV[i], ARGV[i + 1]
          local position = at[address]
          if operation == 'add' then
            local entry = cjson.decode(ARGV[i + 2])
            if position then
              out[position] = entry
            else
              table.insert(out, entry)
              at[address] = #out
            end
          elseif position then
            out[position] = false
            at[address] = nil
          end
        end
        local kept = {}
        for _, entry in ipairs(out) do
          if entry then table.insert(kept, entry) end
        end
        local same = #kept == #pool
        for i = 1, #kept do
          if same and cjson.encode(kept[i]) ~= cjson.encode(pool[i]) then same = false end
        end
        if same then
          return tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
        end
        if #kept == 0 then
          redis.call('SET', KEYS[1], '[]')
        else
          redis.call('SET', KEYS[1], cjson.encode(kept))
        end
        return changed()
        """
}
