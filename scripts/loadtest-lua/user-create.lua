-- scripts/loadtest-lua/user-create.lua - the `user-create` workload of scripts/loadtest.
--   APIARY_TOKEN=... wrk -t2 -c64 -d10s -s scripts/loadtest-lua/user-create.lua URL -- [TAG]
-- POST /users with a unique email per request: lt-TAG-THREAD-N@example.com
-- (TAG defaults to the clock, so reruns do not collide: no 409s).
-- Writes carry "Authorization: Bearer $APIARY_TOKEN" when it is set (issue
-- 10 makes it required; scripts/mint-token makes one).
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   local tag = args[1] or tostring(os.time())
   prefix = '{"name":"Load Test","email":"lt-' .. tag .. "-" .. tid .. "-"
   n = 0
   headers = { ["Content-Type"] = "application/json" }
   local token = os.getenv("APIARY_TOKEN")
   if token and token ~= "" then
      headers["Authorization"] = "Bearer " .. token
   end
end

function request()
   n = n + 1
   return wrk.format("POST", "/users", headers, prefix .. n .. '@example.com"}')
end
