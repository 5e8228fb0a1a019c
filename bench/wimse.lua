-- wrk: every request carries the workload's WIT ($WIT) and the next unused
-- proof of the pool in $PROOFS (one per line): a proof used twice is a
-- replay, so the pool is larger than any run and never wraps.
local wit = os.getenv("WIT")
local proofs = {}
for line in io.lines(os.getenv("PROOFS")) do
  proofs[#proofs + 1] = line
end
-- $PROOF_OFFSET: where this run starts in the pool (the warm-up uses a
-- part the measured run does not reach).
local i = tonumber(os.getenv("PROOF_OFFSET") or "0")
request = function()
  i = i + 1
  return wrk.format(nil, nil, {
    ["workload-identity-token"] = wit,
    ["workload-proof-token"] = proofs[i],
  })
end
