-- wrk script: each request picks a random path from a file (one path a line),
-- headers come from wrk's -H; a line may add its own headers after tabs
-- ("/simple/foo/<TAB>If-None-Match: \"abc\""); done() prints one parseable line:
--   WRK_RESULT {"requests":...,"p50_us":...,...}
-- usage: wrk ... -s wrk_paths.lua http://127.0.0.1:PORT -- PATHS_FILE

local counter = 0
local reqs = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local file = args[1]
  if file == nil then
    error("wrk_paths.lua: pass the paths file after --")
  end
  for line in io.lines(file) do
    if #line > 0 then
      -- pre-format every request once: request() then only picks one
      local fields = {}
      for f in string.gmatch(line, "[^\t]+") do
        fields[#fields + 1] = f
      end
      if #fields == 1 then
        reqs[#reqs + 1] = wrk.format(nil, fields[1])
      else
        -- wrk.format replaces wrk.headers (-H) when given a table: merge them
        local headers = {}
        for k, v in pairs(wrk.headers) do
          headers[k] = v
        end
        for j = 2, #fields do
          local k, v = string.match(fields[j], "^([^:]+):%s*(.*)$")
          if k then
            headers[k] = v
          end
        end
        reqs[#reqs + 1] = wrk.format(nil, fields[1], headers)
      end
    end
  end
  if #reqs == 0 then
    error("wrk_paths.lua: no paths in " .. file)
  end
  math.randomseed(os.time() + (id or 0) * 7919)
end

function request()
  return reqs[math.random(#reqs)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d,"min_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
