-- scripts/loadtest-lua/health.lua - the `health` workload of scripts/loadtest.
--   wrk -t2 -c64 -d10s -s scripts/loadtest-lua/health.lua http://127.0.0.1:8080
-- GET /health on every request (no database).
wrk.method = "GET"
wrk.path = "/health"
