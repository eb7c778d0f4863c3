-- wrk script: GET /discovery/fetch of one app, UP instances only (status=1).
-- Usage: wrk -t2 -c64 -d10s -s bench/lua/fetch.lua http://127.0.0.1:PORT -- ENV APPID
-- Defaults match bench/run.py (env dev, appid main.account.account-service).

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function init(args)
  local env = args[1] or "dev"
  local appid = args[2] or "main.account.account-service"
  wrk.method = "GET"
  wrk.path = "/discovery/fetch?env=" .. urlencode(env) .. "&appid=" .. urlencode(appid) .. "&status=1"
  req = wrk.format()
end

function request()
  return req
end
