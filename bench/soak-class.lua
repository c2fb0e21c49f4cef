-- One traffic class of bench/soak.sh, run by one wrk: GET $SOAK_PATH with Host
-- $SOAK_HOST (default localhost: a numeric Host is itself a CRS finding), every answer
-- expected to carry status $SOAK_EXPECT (default 200). done() prints one line:
--   class=NAME requests=N unexpected=N socket_errors=N p50_us=.. p99_us=.. p999_us=.. max_us=..
-- plus the first unexpected statuses seen.
local path = os.getenv("SOAK_PATH") or "/"
local host = os.getenv("SOAK_HOST") or "localhost"
local expect = tonumber(os.getenv("SOAK_EXPECT") or "200")
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  unexpected = 0
  seen = ""
  req = wrk.format("GET", path, {
    ["Host"] = host,
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.5",
  })
end

request = function()
  return req
end

response = function(status, headers, body)
  if status ~= expect then
    unexpected = unexpected + 1
    if #seen < 60 then seen = seen .. status .. " " end
  end
end

done = function(summary, latency, requests)
  local bad, seen_all = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("unexpected")
    seen_all = seen_all .. t:get("seen")
  end
  local e = summary.errors
  io.write(string.format(
    "class=%s requests=%d unexpected=%d socket_errors=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d seen=[%s]\n",
    os.getenv("SOAK_CLASS") or path, summary.requests, bad,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, seen_all))
end
