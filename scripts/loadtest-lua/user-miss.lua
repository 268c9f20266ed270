-- scripts/loadtest-lua/user-miss.lua - the `user-miss` workload of scripts/loadtest.
--   wrk -t2 -c64 -d10s -s scripts/loadtest-lua/user-miss.lua URL -- [LO [HI]]
-- GET /users/{id}, id uniform in LO..HI (default 1..10000, the seeded
-- users). Every request reaches PostgreSQL while there is no cache; once
-- the shared cache exists, a miss needs an id not cached: see "Load
-- testing" in the README (the server's own view reports the hit ratio).
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   math.randomseed(os.time() * 1000 + tid)
   lo = tonumber(args[1]) or 1
   hi = tonumber(args[2]) or 10000
end

function request()
   return wrk.format(nil, "/users/" .. math.random(lo, hi))
end
