-- Only executions waiting on an External Step are in this index, so counting them for the
-- `spektr_steps_waiting` metric reads the index alone, however many executions have finished.
create index executions_waiting on executions (workspace_id) where status = 'pending';
