-- 0011: the key of the agent's call that made a claim, so a call sent again (its reply
-- was lost) is answered with the claims it already made instead of new ones.
ALTER TABLE attempts ADD COLUMN claim_key TEXT;
