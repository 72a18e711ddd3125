"""Layer 2, the task: task records and files, the output contract, prompts, metrics, the tokenizer, data loaders."""
