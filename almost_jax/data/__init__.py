"""Data layer: chat format, JSONL record schemas, prompt templates, tokenizers."""
