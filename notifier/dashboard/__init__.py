"""The live dashboard: executions as they run, their details, and human approvals."""
