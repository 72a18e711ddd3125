"""Layer 5, the command line: one module per `listopd` subcommand (`add_arguments`, `run`)."""
