-- wrk script: POST a generateContent request and print one machine-readable result line.
--
--   GEMINI_API_KEY=... wrk -t1 -c8 -d10s --latency -s bench/generate.lua \
--       http://127.0.0.1:18080/v1beta/models/gemini-2.5-flash:generateContent
--
-- The request path is the URL's. The last line printed is
--   WRK_RESULT requests=N duration_s=S rps=R p50_ms=A p90_ms=B p99_ms=C max_ms=D errors=E non2xx=F
-- (latencies in milliseconds; errors = connect+read+write+timeout socket errors; non2xx = responses with a status
-- >= 400, which wrk counts as errors.status).

wrk.method = "POST"
wrk.body = '{"contents":[{"parts":[{"text":"Explain how AI works in a few words"}]}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-goog-api-key"] = os.getenv("GEMINI_API_KEY") or "unset"

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout, e.status))
end
