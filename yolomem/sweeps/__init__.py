"""Questions answered with many estimates: fit, pick, the strategy ladder, the table, figure data."""
