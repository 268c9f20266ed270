-- scripts/loadtest-lua/users-list.lua - the `users-list` workload of scripts/loadtest.
--   wrk -t2 -c64 -d10s -s scripts/loadtest-lua/users-list.lua URL -- [PAGES [PER_PAGE]]
-- GET /users?page=N&per_page=20, N uniform in 1..PAGES (10: SPEC 11).
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   math.randomseed(os.time() * 1000 + tid)
   pages = tonumber(args[1]) or 10
   suffix = "&per_page=" .. (args[2] or "20")
end

function request()
   return wrk.format(nil, "/users?page=" .. math.random(1, pages) .. suffix)
end
