"""The web portal: members run the market from a browser."""
