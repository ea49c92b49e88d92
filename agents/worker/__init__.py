"""Worker agent: offers its machine, runs leased jobs in a sandbox (issue 3)."""
