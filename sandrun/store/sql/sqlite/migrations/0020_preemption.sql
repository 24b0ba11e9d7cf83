-- 0020: preemption (issue 25). A pending job of higher priority that fits no node's free
-- room may stop `preemptible` jobs of lower priority on a node where that makes room:
-- each is asked (preempt_requested_at) to checkpoint within its grace and is queued again;
-- preemptions counts how often, so that no job is preempted without end.
ALTER TABLE jobs ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN preempt_requested_at REAL;
