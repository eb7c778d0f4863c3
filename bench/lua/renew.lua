-- wrk script: POST /discovery/renew of one registered instance (urlencoded form body).
-- Usage: wrk -t2 -c64 -d10s -s bench/lua/renew.lua http://127.0.0.1:PORT -- ZONE ENV APPID HOSTNAME
-- Defaults match bench/run.py (zone sh001, env dev, appid bench.renew, hostname bench-renew-host-0001).

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function init(args)
  local zone = args[1] or "sh001"
  local env = args[2] or "dev"
  local appid = args[3] or "bench.renew"
  local hostname = args[4] or "bench-renew-host-0001"
  wrk.method = "POST"
  wrk.path = "/discovery/renew"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.body = "zone=" .. urlencode(zone) .. "&env=" .. urlencode(env) .. "&appid=" .. urlencode(appid)
    .. "&hostname=" .. urlencode(hostname)
  req = wrk.format()
end

function request()
  return req
end
