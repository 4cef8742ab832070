-- wrk script for the "GET / pipelined x16" scenario of scripts/bench: each
-- connection writes 16 requests at once and reads the 16 answers, the way
-- TechEmpower's "plaintext" test loads a server. It makes the load
-- generator's work per request small, so that the server, not wrk, is what
-- sets the pace. wrk counts each answer as a request; its latency figures
-- do not apply (they time a batch, not a request).
local depth = 16

init = function(args)
   local batch = {}
   for i = 1, depth do
      batch[i] = wrk.format(nil, wrk.path)
   end
   req = table.concat(batch)
end

request = function()
   return req
end
