"""Pure business logic: data in, data out, no I/O."""
