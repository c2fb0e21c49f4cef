-- Traffic mix for bench/waf.sh: 12 ordinary requests and 4 attacks (25%), cycled in
-- order by each wrk connection, GET with browser-like headers and Host: localhost
-- (a numeric Host is itself a CRS finding, 920350).
-- With WAF_UNIQUE=1 in the environment every request also carries values never seen
-- before: a fresh session cookie and a fresh `t` query argument (the WAF's memo of
-- operator misses cannot answer for them; see filters/waf/README.md).
local paths = {
  "/hello.txt",
  "/index.html",
  "/echo?q=hello+world&id=42",
  "/echo?search=red+shoes&page=2&sort=price_asc",
  "/echo?id=1%27+or+%271%27%3D%271",                       -- SQLi (942100)
  "/status/200",
  "/echo/api/v1/users/123?fields=name,email",
  "/hello.txt?utm_source=newsletter&utm_medium=email",
  "/echo?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",           -- XSS (941100...)
  "/bytes/1024",
  "/echo?lang=fr&tz=Europe%2FParis",
  "/index.html?ref=home",
  "/echo?f=..%2F..%2F..%2F..%2Fetc%2Fpasswd",              -- path traversal (930100...)
  "/echo?next=%2Faccount%2Fsettings",
  "/echo?email=alice%40example.com&name=Alice",
  "/echo?c=%3Bcat+%2Fetc%2Fpasswd",                        -- shell (932100...)
}
local headers = {
  ["Host"] = "localhost",
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
  ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  ["Accept-Language"] = "en-US,en;q=0.5",
}
local unique = os.getenv("WAF_UNIQUE") == "1"
local reqs = {}
for i, p in ipairs(paths) do reqs[i] = wrk.format("GET", p, headers) end
local n = 0
local serial = 0

-- each wrk thread gets its own prefix (a global in the thread's Lua state)
setup = function(thread)
  thread:set("tag", tostring(math.random(1, 1e9)))
end

request = function()
  n = n % #reqs + 1
  if not unique then
    return reqs[n]
  end
  serial = serial + 1
  local tag = tag or "0"
  local p = paths[n]
  local sep = string.find(p, "?", 1, true) and "&" or "?"
  local h = {}
  for k, v in pairs(headers) do h[k] = v end
  h["Cookie"] = string.format("session=%s%08x; theme=dark", tag, serial)
  return wrk.format("GET", p .. sep .. "t=" .. tag .. serial, h)
end
