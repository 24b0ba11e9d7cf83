-- 0009: what a node's hardware showed, beside the capacity it offers (which its
-- operator may declare: sandrun agent --gpus/--cpus/--memory).
ALTER TABLE nodes ADD COLUMN detected text;
