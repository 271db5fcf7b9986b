"""Test harness: a real redis-server, real worker processes, a task ledger, ansible-runner."""
