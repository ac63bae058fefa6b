"""The Lua scripts: each a named, registered script under a header that names
every KEYS and ARGV entry it uses and what it returns.

A script is what makes a check and its write one step that no other client can
come between. Each is registered once, at import (redis-py's ``register_script``
only hashes the text here), and run with ``SCRIPT(keys=..., args=..., client=...)``:
EVALSHA, and on Redis's NOSCRIPT (a Redis restarted empty lost its script
cache) the script is loaded again and run, by redis-py's ``Script.__call__``.
Owns no key: the callers say which keys.
"""

from __future__ import annotations

import redis

# register_script needs a client only for the text encoding of the script's hash
# (UTF-8, as every client of connect()); this one never connects.
_hashing = redis.Redis()

COMPARE_AND_DELETE = _hashing.register_script("""
-- Delete a key only while it still holds the caller's token (locks, claims, routes).
-- KEYS[1]: the key
-- ARGV[1]: the token the caller set it to
-- Returns 1 if deleted, 0 if the key held another token or nothing.
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
""")

COMPARE_AND_EXTEND = _hashing.register_script("""
-- Extend a key's time to live only while it still holds the caller's token (a lease).
-- KEYS[1]: the key
-- ARGV[1]: the token the caller set it to
-- ARGV[2]: the new time to live, in milliseconds
-- Returns 1 if extended, 0 if the key held another token or nothing (the lease is lost).
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
""")

UPDATE_OPERATION = _hashing.register_script("""
-- Change fields of an operation record, only while it is in one of the expected states
-- and the negotiation lock is (or is not) held by a given token.
-- KEYS[1]: ops_key(instance)
-- KEYS[2]: lock_key(instance)
-- ARGV[1]: the operation id
-- ARGV[2]: the states it may be in, comma-separated (a record without one is 'forwarded')
-- ARGV[3]: the fields to set, a JSON object
-- ARGV[4]: a lock token, or '' for no condition on the lock
-- ARGV[5]: 'held': the token must hold the lock; 'free': it must not
-- Returns 1 if changed, 0 if the record is gone, in another state, or the lock says no.
local raw = redis.call('hget', KEYS[1], ARGV[1])
if not raw then return 0 end
if ARGV[4] ~= '' and ((redis.call('get', KEYS[2]) == ARGV[4]) ~= (ARGV[5] == 'held')) then
  return 0
end
local op = cjson.decode(raw)
local state, expected = op['state'] or 'forwarded', false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == state then expected = true end
end
if not expected then return 0 end
for k, v in pairs(cjson.decode(ARGV[3])) do op[k] = v end
redis.call('hset', KEYS[1], ARGV[1], cjson.encode(op))
return 1
""")

CLAIM_OPERATION = _hashing.register_script("""
-- Claim an operation's closing notice, unless another live process holds the claim.
-- KEYS[1]: claim_key(instance, operation id)
-- ARGV[1]: the claim's token (its owner)
-- ARGV[2]: how long the claim holds, in milliseconds
-- ARGV[3]: a prefix of holders the claimant may replace ('' for none)
-- Returns 1 if claimed, 0 if another holder keeps it.
local holder = redis.call('get', KEYS[1])
if holder and (ARGV[3] == '' or string.sub(holder, 1, #ARGV[3]) ~= ARGV[3]) then
  return 0
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""")

CLAIM_RECOVERY = _hashing.register_script("""
-- Claim an instance's recovery unless one is under way or the window's allowance is
-- spent; one script, so two agents (or a restarted one) can never both win.
-- KEYS[1]: recovery_key(instance), the claim
-- KEYS[2]: recoveries_key(instance), the recoveries started in the window (time -> time)
-- ARGV[1]: the claim's token (its owner)
-- ARGV[2]: how long the claim holds, in milliseconds
-- ARGV[3]: now, Redis's time in seconds
-- ARGV[4]: the window, in seconds
-- ARGV[5]: how many recoveries may start within the window
-- Returns 'claimed', 'already-claimed' or 'rate-limited'.
if redis.call('exists', KEYS[1]) == 1 then return 'already-claimed' end
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('zremrangebyscore', KEYS[2], '-inf', now - window)
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[5]) then return 'rate-limited' end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('zadd', KEYS[2], now, ARGV[3])
redis.call('expire', KEYS[2], math.ceil(window))
return 'claimed'
""")

GROUP_RATE = _hashing.register_script("""
-- Take tokens from a sender's bucket and its group's bucket, both or neither: a message
-- is allowed only if both rates allow it.
-- KEYS[1]: sender_bucket_key(group, sender), a hash: tokens, ts
-- KEYS[2]: group_bucket_key(group), the same
-- ARGV[1]: now, Redis's time in seconds
-- ARGV[2]: the sender's rate, tokens per second
-- ARGV[3]: the sender's burst (its bucket's size)
-- ARGV[4]: the group's rate
-- ARGV[5]: the group's burst
-- ARGV[6]: the cost (tokens this message takes)
-- Returns 'ok' (taken from both), 'sender' or 'group' (the bucket that is short; nothing
-- taken).
local now, cost = tonumber(ARGV[1]), tonumber(ARGV[6])
local function level(key, rate, burst)
  local b = redis.call('hmget', key, 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if not tokens or not ts then return burst end
  return math.min(burst, tokens + math.max(0, now - ts) * rate)
end
local buckets = {{KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), 'sender'},
                 {KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), 'group'}}
local levels = {}
for i, b in ipairs(buckets) do
  levels[i] = level(b[1], b[2], b[3])
  if levels[i] < cost then return b[4] end
end
for i, b in ipairs(buckets) do
  redis.call('hset', b[1], 'tokens', tostring(levels[i] - cost), 'ts', ARGV[1])
  redis.call('expire', b[1], math.ceil(b[3] / b[2]) + 1)
end
return 'ok'
""")

PEER_NOTICE = _hashing.register_script("""
-- Keep a peer's notice for one recipient, coalesced: only the latest per peer is kept,
-- and the recipient's inbox gets a wake-up entry only when nothing was waiting already
-- (the relay drains the whole hash on one wake-up, until it is empty).
-- KEYS[1]: peers_key(recipient), a hash: peer -> notice JSON
-- KEYS[2]: inbox_key(recipient), the stream the relay reads
-- ARGV[1]: the peer
-- ARGV[2]: the notice's seq
-- ARGV[3]: the notice (JSON)
-- ARGV[4]: time to live of both keys, seconds
-- ARGV[5]: the inbox's MAXLEN (~)
-- Returns 1 if kept, 0 if a notice of that peer with a seq as high was waiting already.
local old = redis.call('hget', KEYS[1], ARGV[1])
if old and tonumber(cjson.decode(old)['seq']) >= tonumber(ARGV[2]) then return 0 end
local waiting = redis.call('hlen', KEYS[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
redis.call('expire', KEYS[1], ARGV[4])
if waiting == 0 then
  redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'kind', 'peer')
  redis.call('expire', KEYS[2], ARGV[4])
end
return 1
""")

HASH_COMPARE_AND_DELETE = _hashing.register_script("""
-- Delete a hash field only while it still holds what the caller read (a delivered
-- notice, unless a newer one replaced it meanwhile).
-- KEYS[1]: the hash
-- ARGV[1]: the field
-- ARGV[2]: the value the caller read
-- Returns 1 if deleted, 0 if the field held something else or nothing.
if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('hdel', KEYS[1], ARGV[1])
end
return 0
""")
