"""Model adapters: each turns prepared audio into per-item results and knows nothing about files."""
