-- scripts/loadtest-lua/user-hit.lua - the `user-hit` workload of scripts/loadtest.
--   wrk -t2 -c64 -d10s -s scripts/loadtest-lua/user-hit.lua URL -- [HOT]
-- GET /users/{id}, id uniform in 1..HOT (default 100): a small hot set that
-- the shared cache (issue 7) holds after one pass, so the run measures
-- cache hits. scripts/loadtest warms the set before it measures.
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   math.randomseed(os.time() * 1000 + tid)
   hot = tonumber(args[1]) or 100
end

function request()
   return wrk.format(nil, "/users/" .. math.random(1, hot))
end
