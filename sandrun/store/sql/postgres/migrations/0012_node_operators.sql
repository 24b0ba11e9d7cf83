-- 0012: the operator behind a node: the name of the agent token that registered it. Only
-- that operator's tokens (or an admin) may act as the node afterwards.
ALTER TABLE nodes ADD COLUMN operator text;
