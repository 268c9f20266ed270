-- scripts/loadtest-lua/mixed.lua - the `mixed` workload of scripts/loadtest.
--   APIARY_TOKEN=... wrk -t2 -c64 -d10s -s scripts/loadtest-lua/mixed.lua URL -- [USERS [TAG]]
-- 90% reads, GET /users/{id} with id uniform in 1..USERS (10000), and 10%
-- writes, POST /users with a unique email (as user-create). Writes carry
-- "Authorization: Bearer $APIARY_TOKEN" when it is set.
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   math.randomseed(os.time() * 1000 + tid)
   users = tonumber(args[1]) or 10000
   local tag = args[2] or tostring(os.time())
   prefix = '{"name":"Load Test","email":"lt-' .. tag .. "-" .. tid .. "-"
   n = 0
   headers = { ["Content-Type"] = "application/json" }
   local token = os.getenv("APIARY_TOKEN")
   if token and token ~= "" then
      headers["Authorization"] = "Bearer " .. token
   end
end

function request()
   if math.random(1, 10) == 1 then
      n = n + 1
      return wrk.format("POST", "/users", headers, prefix .. n .. '@example.com"}')
   end
   return wrk.format(nil, "/users/" .. math.random(1, users))
end
