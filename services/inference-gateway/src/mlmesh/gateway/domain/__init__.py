"""Pure gateway logic: circuit breaking, balancing, retry budgets and model naming (no I/O)."""
