"""The request path: held transactions and what answers them.

The registry of waiters (:mod:`.waiters`), starting and finding executions
(:mod:`.executions`) over the process data in S3 (:mod:`.process_data`), their input
(:mod:`.execution_input`), the budgeted reads of Step Functions (:mod:`.execution_reads`)
and what its answers tell (:mod:`.descriptions`), the answers' bodies (:mod:`.answers`),
request bodies (:mod:`.bodies`), idempotency keys (:mod:`.idempotency`) and transaction ids
(:mod:`.ids`). Uses the AWS transport (:mod:`notifier.aws`) and the shared ground; nothing
above it.
"""
