-- Every check of one ShouldRateLimit request, in one atomic call, on Redis's own clock.
--
-- KEYS[i]: the check's stable key `rl:{<key>}` (the braces are the Redis Cluster hash tag, so the
--          window keys derived from it below live in the same slot).
-- ARGV[1]: "" (always, in service: the time is Redis's TIME), or a time in integer microseconds,
--          which only the tests send to replay the shared vectors at chosen instants.
-- ARGV[1 + 5(i-1) + 1 .. 5]: algorithm (1 fixed_window, 2 sliding_window, 3 token_bucket),
--          limit, window (seconds), burst, hits.
-- Returns one string: `allowed remaining reset_after_us used` (allowed 1|0) per check, in order,
-- all space-separated: the client splits it in one C call instead of walking nested replies.
--
-- The maths is ratelimit/algorithms.py operation for operation (same integers, same doubles), and
-- so is the state: a counter per epoch-aligned window `<key>:<window start>` whose expiry is set
-- only when the INCRBY created it; the token bucket's TAT (µs) in `<key>` itself, written only when
-- hits are consumed, expiring when the bucket is full again.

local MICROS = 1000000
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * MICROS + tonumber(t[2])
end
local now_s = math.floor(now / MICROS)

local function int(x)
  return string.format('%.0f', x)
end

local function add(key, hits, ttl)
  local count = redis.call('INCRBY', key, hits)
  if count == hits then
    redis.call('EXPIRE', key, ttl)
  end
  return count
end

local function fixed_window(key, limit, window, hits)
  local start = now_s - now_s % window
  local reset_after = (start + window) * MICROS - now
  local wkey = key .. ':' .. int(start)
  if hits == 0 then
    local count = tonumber(redis.call('GET', wkey) or 0)
    return {count < limit and 1 or 0, math.max(0, limit - count), reset_after, count}
  end
  local count = add(wkey, hits, window)
  return {count <= limit and 1 or 0, math.max(0, limit - count), reset_after, count}
end

local function sliding_window(key, limit, window, hits)
  local start = now_s - now_s % window
  local window_us = window * MICROS
  local elapsed_us = now - start * MICROS
  local left_us = window_us - elapsed_us
  local wkey = key .. ':' .. int(start)
  local previous = tonumber(redis.call('GET', key .. ':' .. int(start - window)) or 0)
  local current = tonumber(redis.call('GET', wkey) or 0)
  local weighted = math.floor(previous * (left_us / window_us))
  local need = math.max(hits, 1)
  local allowed = weighted + current + need <= limit
  if allowed and hits > 0 then
    current = add(wkey, hits, 2 * window)
  end
  local used = weighted + current
  local remaining = math.max(0, limit - used)
  if allowed then
    return {1, remaining, left_us, used}
  end
  local wait_us
  local budget = limit - current - need
  if budget >= 0 then
    wait_us = math.ceil(window_us * (1 - budget / previous)) - elapsed_us
  elseif limit - need < 0 then
    wait_us = left_us + window_us
  else
    wait_us = left_us + math.max(0, math.ceil(window_us * (1 - (limit - need) / current)))
  end
  return {0, remaining, wait_us, used}
end

local function token_bucket(key, limit, window, burst, hits)
  local capacity = burst
  if capacity == 0 then capacity = limit end
  if limit <= 0 or capacity <= 0 then
    return {0, 0, window * MICROS, 0}
  end
  local interval = math.max(1, math.floor(window * MICROS / limit))
  local tolerance = interval * capacity
  local tat = tonumber(redis.call('GET', key) or 0)
  local base = math.max(tat, now)
  local need = math.max(hits, 1)
  local new_tat = base + need * interval
  local allowed = new_tat - now <= tolerance
  local after = base
  if allowed and hits > 0 then
    after = new_tat
    redis.call('SET', key, int(new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
  end
  local remaining = math.min(capacity, math.max(0, math.floor((tolerance - (after - now)) / interval)))
  if allowed then
    return {1, remaining, after - now, capacity - remaining}
  end
  if need > capacity then
    return {0, remaining, base - now, capacity - remaining}
  end
  return {0, remaining, new_tat - tolerance - now, capacity - remaining}
end

local results = {}
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 5
  local algorithm = tonumber(ARGV[base + 1])
  local limit = tonumber(ARGV[base + 2])
  local window = tonumber(ARGV[base + 3])
  local burst = tonumber(ARGV[base + 4])
  local hits = tonumber(ARGV[base + 5])
  if algorithm == 1 then
    results[i] = fixed_window(KEYS[i], limit, window, hits)
  elseif algorithm == 2 then
    results[i] = sliding_window(KEYS[i], limit, window, hits)
  elseif algorithm == 3 then
    results[i] = token_bucket(KEYS[i], limit, window, burst, hits)
  else
    return redis.error_reply('unknown algorithm code ' .. tostring(ARGV[base + 1]))
  end
end
local out = {}
for i = 1, #results do
  local r = results[i]
  out[i] = int(r[1]) .. ' ' .. int(r[2]) .. ' ' .. int(r[3]) .. ' ' .. int(r[4])
end
return table.concat(out, ' ')
