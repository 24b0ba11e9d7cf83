-- 0005: signed results: each node's public key, each attempt's signer and signature.
ALTER TABLE nodes ADD COLUMN public_key text;
ALTER TABLE attempts ADD COLUMN worker_id text;
ALTER TABLE attempts ADD COLUMN signature text;
