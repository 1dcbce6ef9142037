-- wrk script for bench/server/run.sh: every request is a POST of one
-- KServe v2 infer body (JSON), kept alive.
--
-- The body comes from the file named by ES_BENCH_BODY_FILE when that is
-- set, otherwise it is the request for the example model `scaler`
-- (input x, FP32, shape [1,8]). The same request goes to edgeserve and to
-- nginx (whose `return 200` discards the body), so both read and parse the
-- same bytes on the wire.

local body = '{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32",' ..
	'"data":[0.5,-1.25,2,3.5,-4,5.75,6,-7.5]}]}'

local file = os.getenv("ES_BENCH_BODY_FILE")
if file and file ~= "" then
	local f = assert(io.open(file, "rb"))
	body = f:read("*a")
	f:close()
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

-- No response() hook: defining one makes wrk hand every response to Lua,
-- which costs more than the servers under test. done() reads the error
-- counts wrk keeps anyway (status counts responses with status > 399).
function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format("Errors: status %d, connect %d, read %d, write %d, timeout %d\n",
		e.status, e.connect, e.read, e.write, e.timeout))
end
