-- wrk: each request carries the next token of the pool in $TOKENS (one per line).
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, { ["authorization"] = tokens[i] })
end
