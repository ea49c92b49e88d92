"""Speed probe: measures worker speed with verifiable benchmark jobs (issue 3)."""
