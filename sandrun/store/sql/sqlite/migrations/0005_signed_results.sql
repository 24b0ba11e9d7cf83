-- 0005: signed results: each node's public key, each attempt's signer and signature.
ALTER TABLE nodes ADD COLUMN public_key TEXT;
ALTER TABLE attempts ADD COLUMN worker_id TEXT;
ALTER TABLE attempts ADD COLUMN signature TEXT;
